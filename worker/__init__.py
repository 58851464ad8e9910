"""Celery workers for fauxscan: `celery -A worker worker` or `scanner worker`."""

from scanner.settings import Settings
from worker.celery_app import create_app

app = create_app(Settings.from_env())

__all__ = ["app"]
