"""URLs of the demo site."""

from django.contrib import admin
from django.urls import include, path

from stbd_project.interview import views

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("admin/", admin.site.urls),
    path("chat_ws/", include("chat_ws.urls")),
]
