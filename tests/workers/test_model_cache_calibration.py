"""A worker times batch sizes when it first loads a model, keeps them under its data folder, and can be told not to."""

from __future__ import annotations

import json
import logging

import torch

from models.explain.batching import measured_size
from tests.settings import settings_env
from workers import model_cache

DR_MODEL, DR_VERSION = "dr-grading-retinamnist", "1.0.0"


def _row() -> torch.Tensor:
    return torch.zeros(1, 3, 28, 28)


def test_the_first_load_times_batch_sizes_and_a_restarted_worker_reads_them_back(tmp_path, caplog):
    path = tmp_path / "batch-sizes.json"
    with settings_env({"LUMEN_DATA_DIR": str(tmp_path), "LUMEN_BATCH_CALIBRATION": "on"}):
        model_cache._load.cache_clear()
        try:
            with caplog.at_level(logging.INFO, logger="workers.model_cache"):
                model, _card = model_cache.get_model(DR_MODEL, DR_VERSION)
                assert model_cache.get_model(DR_MODEL, DR_VERSION)[0] is model  # timed once per process
            measured = caplog.text
            assert measured.count("rows/s") == 2 and measured.count("measured in") == 2
            if "not used" in measured:
                return  # measured on a busy machine (tests/models/explain/test_batching_calibration.py)
            backward, forward = measured_size(model, _row()), measured_size(model, _row(), backward=False)
            assert f"forward+backward: {backward} rows" in measured and f"forward: {forward} rows" in measured
            assert len(json.loads(path.read_text())) == 2
            caplog.clear()
            model_cache._load.cache_clear()
            model_cache._batch_sizes.cache_clear()  # a new process
            with caplog.at_level(logging.INFO, logger="workers.model_cache"):
                again, _card = model_cache.get_model(DR_MODEL, DR_VERSION)
            assert again is not model and caplog.text.count("kept from an earlier run") == 2
            assert measured_size(again, _row()) == backward
        finally:
            model_cache._load.cache_clear()


def test_with_calibration_off_a_worker_times_nothing(tmp_path, caplog):
    with settings_env({"LUMEN_DATA_DIR": str(tmp_path), "LUMEN_BATCH_CALIBRATION": "off"}):
        model_cache._load.cache_clear()
        try:
            with caplog.at_level(logging.INFO, logger="workers.model_cache"):
                model, _card = model_cache.get_model(DR_MODEL, DR_VERSION)
        finally:
            model_cache._load.cache_clear()
    assert measured_size(model, _row()) is None and "rows/s" not in caplog.text
    assert not (tmp_path / "batch-sizes.json").exists()
