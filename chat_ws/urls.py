"""HTTP URL patterns: ``path("chat_ws/", include("chat_ws.urls"))`` in the site's urls."""

from django.urls import path

from chat_ws import views

app_name = "chat_ws"

urlpatterns = [
    path("health/", views.health_view, name="health"),
    path("metrics", views.metrics_view, name="metrics"),
]
