"""The worker's Celery app, built by a function: importing this module connects nowhere and creates nothing.

`lumen worker` runs `celery -A workers.celery_app worker ...`; Celery's `-A` looks up this module's `app`,
which is built on first use (module `__getattr__`), from the configuration the web app sends with
(`app.queue.create_celery`), plus the task module. Importing this module never imports torch or the tasks.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app import queue
from app.config import Settings, get_settings

RUN_JOB_TASK = queue.RUN_JOB_TASK
TASK_MODULES = ("workers.tasks",)


def create_worker_app(settings: Settings | None = None) -> Celery:
    """The worker's app: the app's broker configuration and the tasks; the embedded broker's folders made now."""
    settings = settings or get_settings()
    queue.prepare_broker(settings)
    return queue.create_celery(settings, include=TASK_MODULES)


@lru_cache(maxsize=1)
def _worker_app() -> Celery:
    return create_worker_app()


def __getattr__(name: str) -> Celery:
    # `celery -A workers.celery_app` reads `workers.celery_app.app`: built here, when it is asked for.
    if name == "app":
        return _worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
