"""Batch sizes chosen by timing the shipped DR network (28 px): the choice, its bounds, and its keeping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from models.card import load_card
from models.explain import batch_calibration
from models.explain.batch_calibration import (
    CANDIDATES,
    BatchSizeStore,
    calibrate,
    choose,
    machine_signature,
    measure,
)
from models.explain.batching import (
    RowGroup,
    batched_passes,
    bytes_per_row,
    measured_size,
    memory_budget,
    rows_per_batch,
    use_batch_size,
)
from models.registry import load_model

DR = Path(__file__).resolve().parents[3] / "models" / "zoo" / "dr-grading-retinamnist"
DR_ID = "dr-grading-retinamnist@1.0.0"
LIMIT_S = 1.5  # per calibration here: the choice need not be good, only made by the rules


def dr_model() -> nn.Module:
    return load_model(load_card(DR)).eval()


def dr_row() -> torch.Tensor:
    return torch.zeros(1, 3, 28, 28)


def count_forwards(model: nn.Module) -> list[int]:
    """Batch sizes of every forward of `model` from now on."""
    sizes: list[int] = []
    model.register_forward_hook(lambda _module, args, _out: sizes.append(len(args[0])))
    return sizes


def test_the_smallest_size_within_the_tolerance_of_the_best_is_chosen():
    rates = {1: 100.0, 2: 180.0, 4: 191.0, 8: 200.0, 16: 150.0}
    assert choose(rates, tolerance=0.05) == 4  # 191 >= 0.95 * 200; 180 is not
    assert choose(rates, tolerance=0.0) == 8
    assert choose(rates, tolerance=0.1) == 2  # 180 >= 0.9 * 200


def test_sizes_tried_are_candidates_within_the_memory_bound_and_the_random_state_is_left_alone():
    model, row = dr_model(), dr_row()
    per_row = bytes_per_row(model, row)
    state = torch.random.get_rng_state()
    with memory_budget(5 * per_row + 1):
        calibration = measure(model, row, time_limit_s=2 * LIMIT_S)
        only_one = measure(model, row, time_limit_s=0.0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert calibration.memory_bound == 5 and calibration.backward
    assert set(calibration.rows_per_s) <= {1, 2, 4, 5} and {1, 2} <= set(calibration.rows_per_s)
    assert calibration.size in calibration.rows_per_s
    assert list(only_one.rows_per_s) == [1] and only_one.size == 5  # nothing compared: the memory bound stands
    assert all(rate > 0 for rate in calibration.rows_per_s.values())
    best = max(calibration.rows_per_s.values())
    assert calibration.rows_per_s[calibration.size] >= 0.95 * best
    assert all(rate < 0.95 * best for size, rate in calibration.rows_per_s.items() if size < calibration.size)
    forward = measure(model, row, backward=False, time_limit_s=LIMIT_S)
    assert not forward.backward and forward.memory_bound > calibration.memory_bound  # no backward: more fit
    assert set(forward.rows_per_s) <= set(CANDIDATES) | {forward.memory_bound}


def test_a_kept_calibration_is_read_back_without_timing_also_after_a_restart(tmp_path):
    path = tmp_path / "batch-sizes.json"
    model, row = dr_model(), dr_row()
    forwards = count_forwards(model)
    first = calibrate(model, row, model_id=DR_ID, store=BatchSizeStore(path), time_limit_s=LIMIT_S, busy_share=1.0)
    assert forwards and not first.kept
    entries = json.loads(path.read_text())
    assert list(entries) == [f"{DR_ID} | 3x28x28 float32 cpu | forward+backward | {machine_signature('cpu')}"]
    assert entries[next(iter(entries))]["size"] == first.size
    # A restarted worker: a new store on the same file, the model loaded again.
    forwards.clear()
    again, store = dr_model(), BatchSizeStore(path)
    again_forwards = count_forwards(again)
    kept = calibrate(again, row, model_id=DR_ID, store=store, time_limit_s=LIMIT_S)
    assert kept.kept and (kept.size, kept.rows_per_s) == (first.size, first.rows_per_s)
    assert calibrate(again, row, model_id=DR_ID, store=store).size == first.size  # from memory now
    assert again_forwards == [] and forwards == []
    assert measured_size(again, row) == first.size
    assert rows_per_batch(again, row) == min(first.size, first.memory_bound)


def test_another_machine_or_model_version_is_measured_again(tmp_path):
    path = tmp_path / "batch-sizes.json"
    model, row = dr_model(), dr_row()
    forwards = count_forwards(model)
    options = {"store": BatchSizeStore(path), "time_limit_s": LIMIT_S, "busy_share": 1.0}
    calibrate(model, row, model_id=DR_ID, machine="machine A", **options)
    calibrate(model, row, model_id=DR_ID, machine="machine A", **options)
    timed_once = len(forwards)
    calibrate(model, row, model_id=DR_ID, machine="machine B", **options)
    assert len(forwards) > timed_once
    calibrate(model, row, model_id="dr-grading-retinamnist@1.0.1", machine="machine B", **options)
    assert len(json.loads(path.read_text())) == 3
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        other_threads = machine_signature("cpu")
    finally:
        torch.set_num_threads(threads)
    assert f"{threads + 1} threads" in other_threads and other_threads != machine_signature("cpu")
    assert torch.__version__ in machine_signature("cpu")


def test_rows_per_batch_sends_at_most_the_measured_size_and_never_more_than_memory_allows():
    model, row = dr_model(), dr_row()
    unmeasured = rows_per_batch(model, row)
    assert unmeasured > 3 and measured_size(model, row) is None
    use_batch_size(model, row, 3)
    assert rows_per_batch(model, row) == 3 and rows_per_batch(model, row, rows_needed=2) == 2
    assert rows_per_batch(model, row, backward=False) > 3  # forward-only rows were not measured
    with memory_budget(2 * bytes_per_row(model, row) + 1):
        assert rows_per_batch(model, row) == 2  # memory still bounds a measured size
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert rows_per_batch(model, row) == unmeasured  # measured with other threads: does not apply
    finally:
        torch.set_num_threads(threads)
    forwards = count_forwards(model)
    x, target = torch.randn(10, 3, 28, 28), torch.zeros(10, dtype=torch.long)
    group = RowGroup(10, lambda part: (x[part], target[part]))
    batched_passes(model, [group], like=row)
    assert forwards == [3, 3, 3, 1] and len(group.collected().logits) == 10


def test_a_calibration_measured_on_a_busy_machine_is_neither_used_nor_kept(tmp_path):
    # Two processes spinning on the 2 cores while the DR net is timed: its sizes are unreliable.
    spin = [sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"]
    spinners = [subprocess.Popen(spin) for _ in range(max(2, torch.get_num_threads()))]
    try:
        model, row, path = dr_model(), dr_row(), tmp_path / "batch-sizes.json"
        calibration = calibrate(model, row, model_id=DR_ID, store=BatchSizeStore(path), time_limit_s=1.0)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert calibration.others_cpu is not None and calibration.others_cpu > batch_calibration.BUSY_SHARE
    assert not calibration.used and measured_size(model, row) is None and not path.exists()
    assert "other processes took" in calibration.describe() and "not used" in calibration.describe()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_an_unreadable_file_means_measuring_again(tmp_path, text):
    path = tmp_path / "batch-sizes.json"
    path.write_text(text)
    model, row = dr_model(), dr_row()
    calibration = calibrate(model, row, model_id=DR_ID, store=BatchSizeStore(path), time_limit_s=0.5, busy_share=1.0)
    assert not calibration.kept and len(json.loads(path.read_text())) == 1
