from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from models.explain import batching
from models.explain.base import ReLURule, gradient_pass
from models.explain.batching import (
    BACKWARD_FACTOR,
    DEFAULT_MAX_BATCH_BYTES,
    RowGroup,
    available_memory,
    batched_passes,
    bytes_per_row,
    cgroup_headroom,
    chunks,
    memory_budget,
    rows_per_batch,
)
from models.explain.bundle import DEFAULT_METHODS, BundleOptions, explain_bundle
from models.explain.integrated_gradients import IntegratedGradients
from tests.models.explain.nets import no_hooks_left, random_input, relative_l2, tiny_densenet


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
    model, row, large = tiny_densenet(), random_input(1, size=16), random_input(1, size=512)
    per_row, per_large_row = bytes_per_row(model, row), bytes_per_row(model, large)
    monkeypatch.setattr("models.explain.batching.available_memory", lambda device: 2**50)
    assert rows_per_batch(model, row) == DEFAULT_MAX_BATCH_BYTES // per_row > 32  # small rows: up to 1 GiB
    assert per_large_row * 32 > DEFAULT_MAX_BATCH_BYTES and rows_per_batch(model, large) == 32
    assert rows_per_batch(model, row, max_rows=5) == 5 and rows_per_batch(model, row, rows_needed=3) == 3
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


def test_memory_budget_caps_rows_per_batch_while_open(monkeypatch):
    model, row = tiny_densenet(), random_input(1, size=16)
    per_row = bytes_per_row(model, row)
    monkeypatch.setattr("models.explain.batching.available_memory", lambda device: 2**50)
    with memory_budget(3 * per_row + 1):
        assert rows_per_batch(model, row) == 3
        with memory_budget(0):
            assert rows_per_batch(model, row) == 1  # never below one row
        assert rows_per_batch(model, row) == 3
    assert rows_per_batch(model, row) == DEFAULT_MAX_BATCH_BYTES // per_row


def test_groups_share_batches_and_get_their_own_rows():
    model, x = tiny_densenet(), random_input(5, size=12)
    target = torch.tensor([0, 1, 2, 3, 0])
    groups = [RowGroup(5, lambda part: (x[part], target[part])),
              RowGroup(5, lambda part: (x[part], target[part]), rule=ReLURule.GUIDED)]
    batched_passes(model, groups, like=x[:1], max_rows=4)  # 10 rows in batches of 4, 4, 2
    assert [len(p.logits) for p in groups[0].parts] == [4, 1] and [len(p.logits) for p in groups[1].parts] == [3, 2]
    for group, rule in zip(groups, (ReLURule.NORMAL, ReLURule.GUIDED), strict=True):
        alone = gradient_pass(model, x, target, rules=int(rule)).input_grad
        assert relative_l2(group.collected().input_grad, alone) < 1e-6
    assert no_hooks_left(model)


def _spy_on_batches(monkeypatch) -> list[tuple[int, int]]:
    # Records (rows, bytes the forward saved for the backward) of every batch the planner sends.
    batches: list[tuple[int, int]] = []
    real = batching.gradient_pass

    def spy(model, x, *args, **kwargs):
        saved: dict[int, int] = {}

        def pack(tensor):
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            result = real(model, x, *args, **kwargs)
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        batches.append((len(x), sum(n for ptr, n in saved.items() if ptr not in params)))
        return result

    monkeypatch.setattr(batching, "gradient_pass", spy)
    return batches


def test_a_small_budget_splits_a_1024_px_path_into_bounded_batches_with_the_same_result(monkeypatch):
    # A DenseNet at 1024 x 1024 (stem stride 4): ~100 MB per row. With room for 2 rows, integrated gradients
    # (6 path rows + 2 end rows) and a bundle (3 single-pass rows of mixed ReLU rules + 6 path rows + the
    # baseline's) go in batches of at most 2 rows, each saving at most what the budget allows, and give
    # the maps of one unsplit batch.
    model, x = tiny_densenet(in_channels=1, num_classes=2, stem_stride=4), random_input(1, in_channels=1, size=1024)
    target = torch.tensor([1])
    budget = int(2.5 * bytes_per_row(model, x))
    batches = _spy_on_batches(monkeypatch)
    options = BundleOptions(target_layer=model.target_layer, n_steps=6, max_rows=32)
    ig = IntegratedGradients(model, n_steps=6, max_rows=32)
    whole_ig, whole_bundle = ig.explain(x, target), explain_bundle(model, x, target, DEFAULT_METHODS, options)
    assert [rows for rows, _ in batches] == [8, 10]
    assert all(saved * BACKWARD_FACTOR > budget for _, saved in batches)  # one batch would not fit
    batches.clear()
    with memory_budget(budget):
        split_ig, split_bundle = ig.explain(x, target), explain_bundle(model, x, target, DEFAULT_METHODS, options)
    assert [rows for rows, _ in batches] == [2] * 4 + [2] * 5
    assert all(saved * BACKWARD_FACTOR <= budget for _, saved in batches)
    assert relative_l2(split_ig, whole_ig) < 1e-5
    for name in DEFAULT_METHODS:
        assert relative_l2(split_bundle[name], whole_bundle[name]) < 1e-5, name
    assert torch.allclose(split_bundle.deltas["integrated_gradients"], whole_bundle.deltas["integrated_gradients"],
                          atol=1e-5)


def _fake_cgroup(tmp_path, membership: str, files: dict[str, str]):
    (tmp_path / "self_cgroup").write_text(membership)
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"root": tmp_path / "fs", "membership": tmp_path / "self_cgroup"}


def test_cgroup_v2_limit_counts_reclaimable_cache_as_free(tmp_path):
    where = _fake_cgroup(tmp_path, "0::/lumen/worker\n", {
        "lumen/worker/memory.max": "4294967296\n", "lumen/worker/memory.current": "3221225472\n",
        "lumen/worker/memory.stat": "anon 2147483648\ninactive_file 536870912\n"})
    assert cgroup_headroom(**where) == 2**32 - 3 * 2**30 + 2**29


def test_cgroup_v1_limit_is_read_from_the_mount_root_as_a_container_sees_it(tmp_path):
    where = _fake_cgroup(tmp_path, "9:pids:/\n4:memory:/docker/abc\n", {
        "memory/memory.limit_in_bytes": str(2**31), "memory/memory.usage_in_bytes": str(2**30),
        "memory/memory.stat": "cache 5\ntotal_inactive_file 1024\n"})
    assert cgroup_headroom(**where) == 2**30 + 1024


def test_no_cgroup_limit_means_none(tmp_path):
    v1 = _fake_cgroup(tmp_path, "4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712",
                                                 "memory/memory.usage_in_bytes": "4791554048"})
    assert cgroup_headroom(**v1) is None
    v2 = _fake_cgroup(tmp_path, "0::/\n", {"memory.max": "max\n", "memory.current": "1\n"})
    assert cgroup_headroom(**v2) is None


def test_an_address_space_limit_bounds_the_memory_planned_for(tmp_path):
    # A real `ulimit -v` in a child process: the planner must not count on memory the process cannot map.
    script = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, resource.RLIM_INFINITY))\n"
        "from models.explain.batching import available_memory\nprint(available_memory('cpu'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[3])
    assert 0 < int(done.stdout) < 6 * 2**30
