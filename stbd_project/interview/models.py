"""Interview progress, kept in the database so that an interview outlives its asking task."""

from django.db import models


class Interview(models.Model):
    """The answers one client gave so far in one conversation."""

    client_id = models.CharField(max_length=128)
    conversation = models.CharField(max_length=64)
    answers = models.JSONField(default=list)
    finished = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client_id", "conversation"], name="interview_unique")
        ]

    def __str__(self) -> str:
        return f"{self.client_id}/{self.conversation} ({len(self.answers)} answers)"
