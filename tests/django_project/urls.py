"""URLs of the test site."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("whoami", views.whoami),
    path("awhoami", views.awhoami),
    path("boom", views.boom),
    path("stream", views.stream),
    path("astream", views.astream),
    path("chat", views.chat),
    path("achat", views.achat),
    path("needs-identity", views.needs_identity),
    path("chat-view", views.ChatView.as_view()),
    path("indirect-chat", views.indirect_chat),
    path("echo", views.echo),
    path("abandon", views.abandon),
    path("aabandon", views.aabandon),
]
