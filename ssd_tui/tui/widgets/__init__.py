"""Reusable widgets of the app (each one knows nothing about screens)."""
