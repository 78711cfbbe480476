"""The demo site's scripted interviewer."""

from django.apps import AppConfig


class InterviewConfig(AppConfig):
    """A scripted process interview in the spirit of SchedulingTBD's."""

    name = "stbd_project.interview"
    label = "interview"
    default_auto_field = "django.db.models.BigAutoField"
