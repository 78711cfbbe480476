"""URLs of the demo site."""

from django.contrib import admin
from django.urls import include, path

from stbd_project.interview import leaks, views

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("admin/", admin.site.urls),
    path("chat_ws/", include("chat_ws.urls")),
    path("demo/leaks", leaks.leaks_view, name="demo-leaks"),  # load-test support (python -m loadtest)
]
