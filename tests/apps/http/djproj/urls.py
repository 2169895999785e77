from django.urls import path

from djproj import views

urlpatterns = [
    path("", views.index),
    path("json", views.json_get, name="json"),
    path("echo-json", views.echo_json),
    path("form", views.form),
    path("upload", views.upload),
    path("stream", views.stream),
    path("cookie/set", views.cookie_set),
    path("cookie/get", views.cookie_get),
    path("redirect", views.redirect_view),
    path("error", views.error),
    path("file", views.file_view),
]
