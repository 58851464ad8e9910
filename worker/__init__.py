"""Celery workers for fauxscan: `celery -A worker worker` or `scanner worker`."""

from scanner.engines.celery import create_app
from scanner.settings import Settings

app = create_app(Settings.from_env())
# A worker outlives broker outages: it keeps reconnecting (Celery backs off and logs each try) instead of exiting
app.conf.broker_connection_max_retries = None

__all__ = ["app"]
