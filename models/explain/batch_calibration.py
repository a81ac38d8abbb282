"""Batch sizes chosen by measurement: a short timing of candidate sizes per model and machine, kept.

The memory planner (`models.explain.batching`) alone sends as many rows at once as memory allows, and that is
not the fastest: with glibc's default allocator a big batch's large tensors are mapped afresh and faulted in
again on every pass, so 54 rows of DenseNet-121 took 3.68 s in 2 x 27 and 2.77 s in 5 x 11 (issue 20). Which
size is fastest depends on the network, the row shape, the machine, its threads and its allocator, so it is
measured where the model runs:

    calibration = calibrate(model, row, model_id="dr@1.0.0", store=BatchSizeStore(path))
    # rows_per_batch(model, row) now gives at most calibration.size (and never more than memory allows)

Sizes 1, 2, 4, ... (up to the memory bound) are timed in `repeats` rounds: the first grows the batch (a
warm-up pass, then passes for at least `MIN_TIMING_S`) until two sizes in a row are no faster than the best
so far or the next would pass the time limit; the later rounds time each of those sizes again in turn, so
that a change of the machine's load hits them all. Rows/s from the median of the rounds (a big batch that
pays its page faults in one round of three is charged for them). The size kept is the smallest
within `TOLERANCE` of the best rows/s: smaller batches take less memory and give their results earlier. Where
only one size could be timed within the limit (a large network, a busy machine), the memory bound is kept.

A `BatchSizeStore` keeps calibrations in memory and in a JSON file, keyed by model, row shape, dtype, device,
pass kind and `machine_signature()` (CPU or GPU name, cores, threads, torch version, allocator settings),
so a restarted worker on the same machine measures nothing; another machine measures again. A calibration
measured while other processes took much of the CPU (`BUSY_SHARE`) is neither used nor kept: on 2 cores such
timings are off by 2-10x, and the planner batches as before.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from models.explain import batching
from models.explain.base import gradient_pass

CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128)
TOLERANCE = 0.05  # sizes within 5% of the best rows/s count as equally fast: the smallest of them is kept
REPEATS = 3
MIN_TIMING_S = 0.05  # one timing runs passes for at least this long, so that 3 ms passes are timed reliably
TIME_LIMIT_S = 6.0  # per pass kind; the DR net at 28 px took 1.7 s (forward + backward, sizes 1-64)
# On 2 cores a pass slows 10-100x while another process runs (its threads wait for each other at every op): a
# calibration measured while other processes took more than this share of the CPU is neither used nor kept
# (a size of 1 chosen so made IG-50 on ResNet-18 4x slower than Captum's one batch).
BUSY_SHARE = 0.25
# glibc reads these at start; they decide whether big batches pay their page faults again on each pass.
_ALLOCATOR_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """The size kept (`size`) for one model, row shape and pass kind (`backward`: forward + backward, else
    forward only), the rows/s measured per size tried, the memory bound that capped the sizes tried, the
    seconds the timing took, and whether it was read back (`kept`) or measured now, and then whether it is
    `used` (not when measured on a busy machine)."""

    size: int
    rows_per_s: dict[int, float]
    memory_bound: int
    backward: bool
    seconds: float
    others_cpu: float | None = None  # share of the machine's CPU that other processes took meanwhile
    kept: bool = False
    used: bool = True

    def describe(self) -> str:
        """E.g. 'forward+backward: 16 rows (rows/s 1: 310, 2: 540, ...; memory bound 146; measured in 1.1 s)'."""
        measured = ", ".join(f"{size}: {rate:.3g}" for size, rate in self.rows_per_s.items())
        how = "kept from an earlier run" if self.kept else f"measured in {self.seconds:.1f} s"
        if self.others_cpu is not None and not self.kept:
            how += f" while other processes took {self.others_cpu:.0%} of the CPU"
        if not self.used:
            how += ": not used, batches as large as memory allows"
        kind = "forward+backward" if self.backward else "forward"
        return f"{kind}: {self.size} rows (rows/s {measured}; memory bound {self.memory_bound}; {how})"


def choose(rows_per_s: dict[int, float], tolerance: float = TOLERANCE) -> int:
    """The smallest size whose rows/s is within `tolerance` of the best."""
    best = max(rows_per_s.values())
    return min(size for size, rate in rows_per_s.items() if rate >= best * (1 - tolerance))


def measure(
    model: nn.Module,
    row: torch.Tensor,
    *,
    backward: bool = True,
    candidates: tuple[int, ...] = CANDIDATES,
    repeats: int = REPEATS,
    time_limit_s: float = TIME_LIMIT_S,
    tolerance: float = TOLERANCE,
) -> Calibration:
    """Time batches of rows like `row` (1, C, *spatial) through `model` (eval mode) at the candidate sizes that
    fit `batching.memory_bound`, and choose one. Random rows from a private generator: the caller's random
    state is left alone."""
    bound = batching.memory_bound(model, row, backward=backward)
    sizes = [size for size in candidates if size < bound] + [min(bound, max(candidates))]
    generator = torch.Generator(device=row.device).manual_seed(0)
    rows = torch.randn((max(sizes), *row.shape[1:]), generator=generator, device=row.device, dtype=row.dtype)
    start, busy = time.perf_counter(), _busy_seconds()
    seconds_per_row: dict[int, list[float]] = {}
    # round_s: what one later round will take, as timed in the first; fastest: the least seconds per row seen
    # (a pass that another process slowed down says little about the next size's cost).
    stalls, round_s, fastest = 0, 0.0, float("inf")
    for size in dict.fromkeys(sizes):  # the first round grows the batch while it gets faster
        timing = max(MIN_TIMING_S, fastest * size)
        projected = time.perf_counter() - start + 2 * timing + (repeats - 1) * (round_s + timing)
        if seconds_per_row and projected > time_limit_s:
            break
        warm_up = time.perf_counter()
        _one_pass(model, rows[:size], backward=backward)  # first-touch pages, kernels for this shape
        warm_up = (time.perf_counter() - warm_up) / size
        best = min((times[0] for times in seconds_per_row.values()), default=float("inf"))
        seconds_per_row[size] = [_seconds_per_row(model, rows[:size], backward=backward)]
        fastest = min(fastest, warm_up, seconds_per_row[size][0])
        round_s += max(MIN_TIMING_S, seconds_per_row[size][0] * size)
        # Two sizes in a row no faster than the best (not one: a single timing on a shared machine can be off).
        stalls = stalls + 1 if seconds_per_row[size][0] >= best / (1 + tolerance) else 0
        if stalls == 2:
            break
    for _ in range(repeats - 1):  # later rounds time every size in turn, so that a change of load hits them all
        if time.perf_counter() - start > time_limit_s:
            break  # the machine got slower than the first round said: choose from the rounds done
        for size, times in seconds_per_row.items():
            times.append(_seconds_per_row(model, rows[:size], backward=backward))
    rows_per_s = {size: 1 / statistics.median(times) for size, times in seconds_per_row.items()}
    seconds = time.perf_counter() - start
    # One size timed (rows too slow for a second within the limit): nothing compared, so memory decides as before.
    return Calibration(
        size=choose(rows_per_s, tolerance) if len(rows_per_s) > 1 else bound,
        rows_per_s=rows_per_s,
        memory_bound=bound,
        backward=backward,
        seconds=seconds,
        others_cpu=_others_share(busy, seconds),
    )


def _one_pass(model: nn.Module, x: torch.Tensor, *, backward: bool) -> None:
    if backward:
        gradient_pass(model, x, torch.zeros(len(x), dtype=torch.long, device=x.device))
    else:
        with torch.no_grad():
            model(x)
    _synchronize(x.device)


def _seconds_per_row(model: nn.Module, x: torch.Tensor, *, backward: bool) -> float:
    """Passes of the batch `x` for at least `MIN_TIMING_S`: their seconds per row."""
    _synchronize(x.device)
    passes, begin = 0, time.perf_counter()
    while passes == 0 or time.perf_counter() - begin < MIN_TIMING_S:
        _one_pass(model, x, backward=backward)
        passes += 1
    return (time.perf_counter() - begin) / (passes * len(x))


def _busy_seconds() -> tuple[float, float] | None:
    """CPU seconds used so far by the whole machine (/proc/stat: all but idle and iowait) and by this process;
    None without /proc."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    own = os.times()
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def _others_share(before: tuple[float, float] | None, seconds: float) -> float | None:
    after = _busy_seconds()
    if before is None or after is None or seconds <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return min(1.0, max(0.0, others / (seconds * (os.cpu_count() or 1))))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_signature(device: torch.device | str) -> str:
    """What a measured size depends on beyond the model: the processor (or GPU), cores, torch threads, torch
    version and the allocator's settings."""
    device = torch.device(device)
    processor = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    allocator = ",".join(f"{name}={os.environ[name]}" for name in _ALLOCATOR_VARIABLES if name in os.environ)
    return (
        f"{processor}; {os.cpu_count()} cores; {torch.get_num_threads()} threads; torch {torch.__version__}; "
        f"allocator {allocator or 'default'}"
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class BatchSizeStore:
    """Calibrations kept in memory and, when `path` is given, in a JSON file that later processes read.

    Two processes writing at once may lose one's entry (each rewrites the file whole, atomically): that
    model is then measured again on its next start, nothing worse.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._memory: dict[str, Calibration] = {}

    def get(self, key: str) -> Calibration | None:
        if key not in self._memory and self.path is not None:
            entry = self._read().get(key)
            if entry is not None:
                self._memory[key] = Calibration(
                    **{**entry, "kept": True, "rows_per_s": {int(k): v for k, v in entry["rows_per_s"].items()}}
                )
        return self._memory.get(key)

    def put(self, key: str, calibration: Calibration) -> None:
        self._memory[key] = calibration
        if self.path is None:
            return
        entries = self._read()
        entries[key] = {k: v for k, v in asdict(calibration).items() if k not in ("kept", "used")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(entries, indent=1, sort_keys=True))
        partial.replace(self.path)

    def _read(self) -> dict[str, dict]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            logger.warning("%s is unreadable: batch sizes will be measured again", self.path, exc_info=True)
            return {}
        return entries if isinstance(entries, dict) else {}


def calibration_key(model_id: str, row: torch.Tensor, *, backward: bool, machine: str) -> str:
    """E.g. 'dr-grading-retinamnist@1.0.0 | 3x28x28 float32 cpu | forward+backward | <machine_signature()>'."""
    shape = "x".join(str(s) for s in row.shape[1:])
    kind = "forward+backward" if backward else "forward"
    return f"{model_id} | {shape} {str(row.dtype).removeprefix('torch.')} {row.device} | {kind} | {machine}"


def calibrate(
    model: nn.Module,
    row: torch.Tensor,
    *,
    model_id: str,
    store: BatchSizeStore,
    backward: bool = True,
    machine: str | None = None,
    time_limit_s: float = TIME_LIMIT_S,
    busy_share: float = BUSY_SHARE,
) -> Calibration:
    """The batch size for rows like `row` (1, C, *spatial) through `model`, kept in `store` under `model_id`
    (name and version) and this machine (`machine`, default `machine_signature(row.device)`): read back if
    kept, else measured within `time_limit_s` and kept. `rows_per_batch` uses it from now on, unless it was
    measured while other processes took more than `busy_share` of the CPU: then it is neither used nor kept
    (`used` False), and batches stay as large as memory allows."""
    key = calibration_key(model_id, row, backward=backward, machine=machine or machine_signature(row.device))
    calibration = store.get(key)
    if calibration is None:
        calibration = measure(model, row, backward=backward, time_limit_s=time_limit_s)
        if calibration.others_cpu is not None and calibration.others_cpu > busy_share:
            return replace(calibration, used=False)
        store.put(key, calibration)
    batching.use_batch_size(model, row, calibration.size, backward=backward)
    return calibration
