"""HTTP URL patterns: ``path("chat_ws/", include("chat_ws.urls"))`` in the site's urls."""

from django.urls import path

from chat_ws import views

app_name = "chat_ws"

urlpatterns = [
    path("health/", views.health_view, name="health"),
    path("metrics/", views.metrics_view, name="metrics"),
    # The former path, without the slash, for scrapers already configured with it. Served, not
    # redirected: some clients drop the Authorization header or do not follow a redirect.
    path("metrics", views.metrics_view, name="metrics-legacy"),
]
