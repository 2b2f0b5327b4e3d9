"""URLs of the example."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("v1/chat/completions", views.chat),
    path("v1/models", views.models),
    path("identities", views.identities),
]
