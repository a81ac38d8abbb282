from __future__ import annotations

import torch

from models.explain.batching import available_memory, bytes_per_row, chunks, rows_per_batch
from tests.models.explain.nets import no_hooks_left, random_input, tiny_densenet


def test_chunks_are_near_equal_and_cover_everything():
    assert chunks(50, 32) == [slice(0, 25), slice(25, 50)]
    assert chunks(3, 10) == [slice(0, 3)]
    assert chunks(0, 4) == []
    parts = chunks(101, 8)
    assert sum(p.stop - p.start for p in parts) == 101 and max(p.stop - p.start for p in parts) <= 8


def test_bytes_per_row_grows_with_the_image_and_is_cached():
    model = tiny_densenet()
    small, large = bytes_per_row(model, random_input(1, size=16)), bytes_per_row(model, random_input(1, size=32))
    assert 3.5 < large / small < 4.5  # activations scale with the pixels
    assert bytes_per_row(model, random_input(1, size=16)) == small
    assert no_hooks_left(model)
    assert available_memory("cpu") > 0


def test_rows_per_batch_is_capped_and_bounded_by_memory(monkeypatch):
    model, row = tiny_densenet(), random_input(1, size=16)
    assert rows_per_batch(model, row) == 32 and rows_per_batch(model, row, max_rows=5) == 5
    assert rows_per_batch(model, row, rows_needed=3) == 3
    per_row = bytes_per_row(model, row)
    monkeypatch.setattr("models.explain.batching.available_memory", lambda device: 8 * per_row)
    assert rows_per_batch(model, row, fraction=0.5) == 4
    monkeypatch.setattr("models.explain.batching.available_memory", lambda device: 0)
    assert rows_per_batch(model, row) == 1  # never below one row


def test_probe_leaves_parameters_and_autograd_state_alone():
    model = tiny_densenet()
    with torch.no_grad():
        assert bytes_per_row(model, random_input(1, size=20)) > 0  # probes with grad even inside no_grad
        assert not torch.is_grad_enabled()
    assert all(p.grad is None for p in model.parameters())
