"""Memory-bounded batch sizes for methods that send many rows through a network (path points, noise
samples, perturbations).

Captum's IG sends all path points as one batch by default, which runs out of memory on large images (the
most reported complaint). Here the rows per batch come from the memory one row needs, measured once per
(model, row shape, dtype, device) by a probe forward of one row, and the memory free now:

    size = rows_per_batch(model, x[:1], backward=True)    # at least 1, at most `max_rows`
    for part in chunks(n_rows, size): ...                 # near-equal slices covering range(n_rows)

`batched_passes(model, groups, like=x[:1])` sends the rows of several `RowGroup`s (path points, a bundle's
normal / guided / deconv rows, the ends of a path) through such batches together: on a shared CPU each
pass costs a fixed toll on top of its rows (threads wait for each other at every op), so a few full batches
beat many small ones.

As large as memory allows is not the fastest, though: with glibc's default allocator every large tensor of a
big batch is mapped afresh and its pages faulted in again on each pass (PERF-NOTES), so 54 DenseNet-121 rows
took 1.33x longer in 2 x 27 than in 5 x 11. Where a size was measured for a model (`use_batch_size`, set by
`models.explain.batch_calibration`), batches take at most that many rows; memory still bounds them.

API: `available_memory(device)` (the least of the machine's, its container's and `ulimit -v`'s headroom),
`cgroup_headroom()`, `memory_budget(nbytes)` (a context manager capping what batches may take),
`bytes_per_row(model, row, backward=...)`, `memory_bound(...)`, `use_batch_size(...)`, `measured_size(...)`,
`rows_per_batch(...)`, `chunks(n, size)`, `RowGroup`, `batched_passes(...)`. No hooks are left behind.
"""

from __future__ import annotations

import os
import resource
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.explain.base import Pass, ReLURule, gradient_pass

DEFAULT_MAX_ROWS = 32  # past ~16-32 rows a 224 px batch gains nothing on CPU (PERF-NOTES), only risks memory
# ... but small rows gain from more: a pass has fixed costs, and 52 rows of the 28 px DR model (7 MiB a row)
# took 10% less in one pass than in two (2 threads). Rows of up to this many bytes in all are allowed.
DEFAULT_MAX_BATCH_BYTES = 2**30
MEMORY_FRACTION = 0.5  # of the free memory, leaving room for other jobs and the allocator's slack
# The backward holds gradients of about the largest activations next to what the forward saved, and
# autograd frees the saved tensors as it goes: twice the saved bytes bounds the peak in practice.
BACKWARD_FACTOR = 2.0

_PROBED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()
_MEASURED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()
_BUDGET: ContextVar[int | None] = ContextVar("memory_budget", default=None)


@contextmanager
def memory_budget(nbytes: int) -> Iterator[None]:
    """While open, plan batches to take at most `nbytes` (as well as at most `fraction` of the free
    memory): e.g. a worker's share of a device, or a test of the planner without filling the machine."""
    token = _BUDGET.set(int(nbytes))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def available_memory(device: torch.device | str) -> int:
    """Bytes free for new tensors on `device`.

    CUDA: `torch.cuda.mem_get_info` plus what PyTorch's caching allocator holds but does not use. CPU: the
    least of the machine's MemAvailable (/proc/meminfo; os.sysconf elsewhere), the headroom of this
    process's cgroup (a container's memory limit, which /proc/meminfo does not show) and the headroom
    under its address-space limit (`ulimit -v`), so a worker in a 4 GiB container plans for 4 GiB.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    limits = [_machine_available(), cgroup_headroom(), _address_space_headroom()]
    return max(0, min(limit for limit in limits if limit is not None))


def _machine_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    # No /proc (not Linux): free pages as the C library counts them.
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes this process's memory cgroup may still take (limit - usage, reclaimable page cache counted as
    free), or None without a limit. cgroup v2 (memory.max) and v1 (memory.limit_in_bytes); the process's
    own cgroup folder is tried first, then the root of the mount (what a container sees of itself)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            folders, files = [root / path.lstrip("/"), root], ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            folders = [root / "memory" / path.lstrip("/"), root / "memory"]
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        for folder in folders:
            headroom = _cgroup_folder_headroom(folder, *files)
            if headroom is not None:
                return headroom
    return None


def _cgroup_folder_headroom(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    try:
        limit_text = (folder / limit_file).read_text().strip()
        usage = int((folder / usage_file).read_text())
    except (OSError, ValueError):
        return None
    # v2 says "max"; v1 says a number near 2**63 (rounded to the page size) when there is no limit.
    if limit_text == "max" or int(limit_text) >= 2**62:
        return None
    inactive = 0
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
    except (OSError, ValueError):
        pass
    return max(0, int(limit_text) - usage + inactive)


def _address_space_headroom() -> int | None:
    """RLIMIT_AS minus the process's virtual size, or None when unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    except OSError:
        pass
    return soft


def bytes_per_row(model: nn.Module, row: torch.Tensor, *, backward: bool = True) -> int:
    """Bytes one row of `row`'s shape takes through `model`: what the forward saves for the backward
    (activations; the parameters are excluded, they are shared by all rows), times `BACKWARD_FACTOR` if
    a backward follows, plus the input and its gradient. Measured by one probe forward of `row[:1]`
    and cached per model, row shape, dtype and device."""
    row = row[:1]
    key = (tuple(row.shape[1:]), row.dtype, row.device, backward)
    cache = _PROBED.setdefault(model, {})
    if key not in cache:
        saved = _saved_bytes(model, row)
        cache[key] = int(saved * (BACKWARD_FACTOR if backward else 1.0)) + 2 * row.nelement() * row.element_size()
    return cache[key]


def _saved_bytes(model: nn.Module, row: torch.Tensor) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(row.detach().requires_grad_(True))
    return total


def _row_key(row: torch.Tensor, backward: bool) -> tuple:
    # Threads count too: a size measured with 2 threads says little about 16.
    return (tuple(row.shape[1:]), row.dtype, row.device, backward, torch.get_num_threads())


def use_batch_size(model: nn.Module, row: torch.Tensor, size: int, *, backward: bool = True) -> None:
    """From now on send rows like `row` (1, C, *spatial) through `model` (forward + backward, or forward
    only) at most `size` at once: the fastest size measured on this machine, with these threads."""
    _MEASURED.setdefault(model, {})[_row_key(row, backward)] = max(1, int(size))


def measured_size(model: nn.Module, row: torch.Tensor, *, backward: bool = True) -> int | None:
    """The size `use_batch_size` set for rows like `row`, or None (never measured here)."""
    return _MEASURED.get(model, {}).get(_row_key(row, backward))


def memory_bound(
    model: nn.Module,
    row: torch.Tensor,
    *,
    backward: bool = True,
    max_rows: int | None = None,
    fraction: float = MEMORY_FRACTION,
) -> int:
    """How many rows like `row` fit: `fraction` of the free memory (and the `memory_budget`, if one is open),
    at least 1, at most `max_rows` (default: `DEFAULT_MAX_ROWS`, or more small rows up to
    `DEFAULT_MAX_BATCH_BYTES` in all). What `rows_per_batch` takes without a measured size."""
    per_row = max(1, bytes_per_row(model, row, backward=backward))
    cap = max_rows or max(DEFAULT_MAX_ROWS, DEFAULT_MAX_BATCH_BYTES // per_row)
    usable = int(available_memory(row.device) * fraction)
    budget = _BUDGET.get()
    if budget is not None:
        usable = min(usable, budget)
    return max(1, min(cap, usable // per_row))


def rows_per_batch(
    model: nn.Module,
    row: torch.Tensor,
    *,
    backward: bool = True,
    max_rows: int | None = None,
    fraction: float = MEMORY_FRACTION,
    rows_needed: int | None = None,
) -> int:
    """How many rows like `row` (1, C, *spatial) to send through `model` at once: the size measured for them
    (`use_batch_size`) if any, never more than `memory_bound` allows, at least 1, at most `rows_needed`."""
    if max_rows == 1 or rows_needed == 1:
        return 1
    size = memory_bound(model, row, backward=backward, max_rows=max_rows, fraction=fraction)
    measured = measured_size(model, row, backward=backward)
    if measured is not None:
        size = min(size, measured)
    return size if rows_needed is None else max(1, min(size, rows_needed))


def chunks(n: int, size: int) -> list[slice]:
    """Near-equal slices of at most `size` covering range(n): 50 rows at size 32 -> 25 + 25, not 32 + 18,
    as equal batches run at the same speed per row."""
    if n <= 0:
        return []
    parts = -(-n // max(1, size))
    step = -(-n // parts)
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


@dataclass
class RowGroup:
    """`n` rows to send through a model with one ReLU backward rule.

    `rows(part)` makes the inputs (k, C, *spatial) and targets (k,) of the rows in `part`, a slice of
    range(n), only when their batch is due (a path's points never exist all at once); `take(part, result)`
    receives their `Pass`. Without `take`, the parts are kept and `collected()` joins them.
    """

    n: int
    rows: Callable[[slice], tuple[torch.Tensor, torch.Tensor]]
    take: Callable[[slice, Pass], None] | None = None
    rule: ReLURule = ReLURule.NORMAL
    parts: list[Pass] = field(default_factory=list)

    def collected(self) -> Pass:
        """The `Pass` of all n rows, in order (for a group without `take`)."""
        if len(self.parts) == 1:
            return self.parts[0]

        def join(name: str) -> torch.Tensor | None:
            values = [getattr(part, name) for part in self.parts]
            return None if values[0] is None else torch.cat(values)

        return Pass(
            logits=torch.cat([p.logits for p in self.parts]),
            input_grad=join("input_grad"),
            activations=join("activations"),
            layer_grad=join("layer_grad"),
        )


def batched_passes(
    model: nn.Module,
    groups: Sequence[RowGroup],
    *,
    like: torch.Tensor,
    layer: nn.Module | None = None,
    input_grad: bool = True,
    max_rows: int | None = None,
) -> None:
    """Send the rows of `groups`, in order, through `model` in memory-bounded batches of rows like `like`
    (1, C, *spatial): one `gradient_pass` per batch, whatever groups and rules its rows come from, with
    `layer` recorded and the input gradient computed (or not) for all rows. Each group gets its rows' results."""
    total = sum(group.n for group in groups)
    size = rows_per_batch(model, like, max_rows=max_rows, rows_needed=total)
    starts = [sum(group.n for group in groups[:i]) for i in range(len(groups))]
    for batch in chunks(total, size):
        pieces = [
            (group, slice(max(batch.start, start) - start, min(batch.stop, start + group.n) - start))
            for group, start in zip(groups, starts, strict=True)
            if max(batch.start, start) < min(batch.stop, start + group.n)
        ]
        made = [group.rows(part) for group, part in pieces]
        x, target = made[0] if len(made) == 1 else (torch.cat([m[0] for m in made]), torch.cat([m[1] for m in made]))
        rules = None
        if any(group.rule != ReLURule.NORMAL for group, _ in pieces):
            rules = torch.tensor([int(group.rule) for group, _ in pieces]).repeat_interleave(
                torch.tensor([part.stop - part.start for _, part in pieces])
            )
        result = gradient_pass(model, x, target, layer=layer, input_grad=input_grad, rules=rules)
        offset = 0
        for group, part in pieces:
            rows = result.rows(slice(offset, offset + part.stop - part.start))
            offset += part.stop - part.start
            if group.take is None:
                group.parts.append(rows)
            else:
                group.take(part, rows)
