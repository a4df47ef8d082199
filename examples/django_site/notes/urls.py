from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("api/notes", views.api_notes, name="api-notes"),
    path("api/notes/<int:note_id>", views.api_note, name="api-note"),
    path("notes/new", views.new_note, name="new-note"),
    path("upload", views.upload, name="upload"),
    path("download", views.download, name="download"),
    path("boom", views.boom, name="boom"),
    path("health", views.health, name="health"),
]
