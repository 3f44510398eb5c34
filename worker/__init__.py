"""Celery worker: the app configured from the service settings and the one job task."""
