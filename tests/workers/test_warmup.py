"""A worker loads and runs the models it serves before its first job (workers/warmup.py)."""

from __future__ import annotations

from celery.signals import worker_process_init

from app.config import get_settings
from models.card import scan_cards
from workers import model_cache, tasks, warmup


def test_the_served_models_are_loaded_before_the_first_job() -> None:
    model_cache._load.cache_clear()
    served = sorted(f"{c.name} {c.version}" for c in scan_cards(get_settings().model_dirs).cards
                    if c.serve_automatically)
    assert served  # the zoo serves the DR and the chest model on studies

    assert sorted(warmup.warm_served_models()) == served
    assert model_cache._load.cache_info().currsize == len(served)
    # A job of a served model now finds it loaded.
    before = model_cache._load.cache_info().hits
    name, version = served[0].split(" ")
    model_cache.get_model(name, version)
    assert model_cache._load.cache_info().hits == before + 1


def test_each_process_that_runs_jobs_warms_up_when_the_pool_starts_it() -> None:
    # Sent by the solo pool as it starts, and in each prefork child.
    assert any(getattr(receiver(), "__name__", "") == tasks._warm_up.__name__
               for _, receiver in worker_process_init.receivers)
