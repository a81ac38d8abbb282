"""The Celery app and its configuration. Importing this module never imports torch or the tasks."""

from __future__ import annotations

from celery import Celery

from app.config import Settings, get_settings

RUN_JOB_TASK = "lumen.run_job"
QUEUES = ("gpu", "cpu")


def celery_config(settings: Settings) -> dict[str, object]:
    """Broker settings: Redis when BROKER_URL says so, else kombu's filesystem transport (no server)."""
    config: dict[str, object] = {
        "broker_url": settings.celery_broker_url,
        # Postgres is the job store; the result backend is not used.
        "task_ignore_result": True,
        "result_backend": None,
        # A task is acknowledged only when done, and re-queued if its worker dies mid-way.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "cpu",
        "task_create_missing_queues": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "task_time_limit": 30 * 60,
        "task_soft_time_limit": 25 * 60,
    }
    if settings.broker_url is not None and settings.broker_namespace:
        config["broker_transport_options"] = {"global_keyprefix": settings.broker_namespace}
    if settings.broker_url is None:
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "control_folder": str(folder / "control"),
        }
        # The filesystem transport has no fanout exchange for remote control, gossip or mingle.
        config["worker_enable_remote_control"] = False
        config["worker_send_task_events"] = False
    return config


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("lumen", include=["workers.tasks"])
    app.conf.update(celery_config(settings))
    return app


celery_app = create_celery()
