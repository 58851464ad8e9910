"""Celery workers for fauxscan: `celery -A worker worker` or `scanner worker`."""

from scanner.engines.celery import create_app
from scanner.settings import Settings

app = create_app(Settings.from_env())

__all__ = ["app"]
