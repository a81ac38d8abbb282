"""Benchmark: Lumen's attribution methods and bundle against Captum and against the floor.

Run: `.venv/bin/python bench/attribution.py [--quick] [--repeats N] [--repeats-large N] [--out reports/benchmarks.md]`.

For each network (the DR reference model at 28 px, a ResNet-18-size and a DenseNet-121-size net at 224 px,
random weights, batch 1) it measures, in rounds that call each contender in turn after one warm-up (ratios are
medians over rounds, so both sides of a ratio share the load of the moment on a shared machine):
- each method alone in Lumen and in Captum (same settings: IG with 50 Gauss-Legendre steps);
- the default bundle against the sum of the Captum calls (and the bound on that ratio, see the page), and
  against its floor: plain forward + backward passes of the same number of rows (1 normal + 1 guided +
  1 deconv + 50 path rows), batched the same way;
- IG-50 against 50 plain batched passes.
Batch sizes are measured first, as a worker does when it loads a model (`models.explain.batch_calibration`),
and reported; then the issue-20 case: the default bundle of one DenseNet-121 image (54 rows) in the calibrated
batches against batches as large as memory allows, in interleaved rounds, under the fixed allocator and, in a
child process, under glibc's default one (the worker's).
The allocator is fixed (PERF-NOTES: first-touch page faults make default-glibc timings of big batches vary by
+-50%): the script re-executes itself with MALLOC_MMAP_MAX_=0 and MALLOC_TRIM_THRESHOLD_ set when they are
absent (not with --default-allocator, which the child process of the batch case gets). Uses CUDA when present;
2 CPU threads.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ALLOCATOR = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(64 * 1024**3)}
ROOT = Path(__file__).resolve().parents[1]

if "--default-allocator" not in sys.argv and any(os.environ.get(k) != v for k, v in ALLOCATOR.items()):
    # glibc reads these at process start only: re-execute with them set.
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ALLOCATOR})

sys.path.insert(0, str(ROOT))

import captum  # noqa: E402
import torch  # noqa: E402
from captum.attr import (  # noqa: E402
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Saliency,
)
from torch import nn  # noqa: E402

from models.explain.base import gradient_pass  # noqa: E402
from models.explain.batch_calibration import BatchSizeStore, Calibration, calibrate  # noqa: E402
from models.explain.batching import chunks, rows_per_batch  # noqa: E402
from models.explain.bundle import DEFAULT_METHODS, BundleOptions, explain_bundle  # noqa: E402
from models.explain.registry import explainer_class  # noqa: E402
from models.networks.densenet import DenseNet  # noqa: E402

THREADS = 2
IG_STEPS = 50
T = TypeVar("T")


class Block(nn.Module):
    """ResNet basic block with one ReLU module per call site (guided backprop needs them)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.down(x))


def resnet18(in_channels: int = 3, num_classes: int = 5) -> nn.Module:
    """ResNet-18 (He et al. 2016) layout: 7x7 stem, max pool, 4 stages of 2 blocks, GAP, linear."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    model = nn.Sequential(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))
    model.target_layer = "0.9"  # the last block
    return model.eval()


def densenet121() -> nn.Module:
    """DenseNet-121 blocks (6, 12, 24, 16), growth 32, on a stride-4 stem (56 px first block), 1 channel."""
    model = DenseNet(
        spatial_dims=2,
        in_channels=1,
        num_classes=2,
        growth_rate=32,
        block_layers=(6, 12, 24, 16),
        init_features=64,
        stem_stride=4,
    )
    model.target_layer = "features.relu_final"
    return model.eval()


def dr_model() -> nn.Module:
    from models.card import load_card
    from models.registry import load_model

    card = load_card(ROOT / "models" / "zoo" / "dr-grading-retinamnist")
    model = load_model(card).eval()
    model.target_layer = card.target_layer
    return model


def captum_calls(model: nn.Module, layer_name: str, x: torch.Tensor, t: torch.Tensor) -> dict[str, Callable]:
    layer = model.get_submodule(layer_name)
    mode = "bilinear"

    def gradcam() -> torch.Tensor:
        raw = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
        return LayerAttribution.interpolate(raw, tuple(x.shape[2:]), interpolate_mode=mode)

    return {
        "gradient": lambda: Saliency(model).attribute(x, t, abs=False),
        "saliency": lambda: Saliency(model).attribute(x, t),
        "input_x_gradient": lambda: InputXGradient(model).attribute(x, t),
        "gradcam": gradcam,
        "guided_backprop": lambda: GuidedBackprop(model).attribute(x, t),
        "deconvnet": lambda: Deconvolution(model).attribute(x, t),
        "guided_gradcam": lambda: GuidedGradCam(model, layer).attribute(x, t, interpolate_mode=mode),
        "integrated_gradients": lambda: IntegratedGradients(model).attribute(x, target=t, n_steps=IG_STEPS),
    }


def lumen_calls(model: nn.Module, layer_name: str, x: torch.Tensor, t: torch.Tensor) -> dict[str, Callable]:
    calls = {}
    for name in DEFAULT_METHODS:
        cls = explainer_class(name)
        explainer = cls(model, layer_name) if name in ("gradcam", "guided_gradcam") else cls(model)
        calls[name] = lambda e=explainer: e.explain(x, t)
    return calls


def floor(model: nn.Module, x: torch.Tensor, t: torch.Tensor, rows: int) -> Callable:
    """`rows` plain forward + backward rows of x, batched as Lumen batches them."""
    size = rows_per_batch(model, x[:1], rows_needed=rows)

    def run() -> None:
        for part in chunks(rows, size):
            n = part.stop - part.start
            gradient_pass(model, x.expand(n, *x.shape[1:]), t.expand(n))

    return run


def interleaved(calls: dict[str, Callable], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call per round: one warm-up each (and the batch-size probe, cached), then `repeats`
    rounds calling each in turn, so that a ratio of two calls of the same round shares the machine's load."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(times: dict[str, list[float]], over: str, under: str) -> float:
    """Median over rounds of over / under."""
    return statistics.median(a / b for a, b in zip(times[over], times[under], strict=True))


def bench_network(
    label: str, model: nn.Module, shape: tuple[int, ...], repeats: int, device: torch.device
) -> tuple[list, Calibration]:
    model = model.to(device)
    x = torch.randn(1, *shape, device=device)
    t = torch.tensor([1], device=device)
    calibration = calibrate(model, x, model_id=label, store=BatchSizeStore(), busy_share=1.0)  # as a worker does
    print(f"{label:>14} batch size {calibration.describe()}", flush=True)
    layer = model.target_layer
    ours, theirs = lumen_calls(model, layer, x, t), captum_calls(model, layer, x, t)
    rows = []
    for name in DEFAULT_METHODS:
        times = interleaved({"lumen": ours[name], "captum": theirs[name]}, repeats)
        lumen, cap = statistics.median(times["lumen"]), statistics.median(times["captum"])
        rows.append((label, name, lumen, cap, paired_ratio(times, "captum", "lumen"), None, None))
        print(
            f"{label:>14} {name:>22}  lumen {lumen * 1e3:8.1f} ms  captum {cap * 1e3:8.1f} ms  x{rows[-1][4]:5.2f}",
            flush=True,
        )
    options = BundleOptions(target_layer=layer, n_steps=IG_STEPS)
    others = [call for name, call in theirs.items() if name != "integrated_gradients"]
    # Captum's calls run in the same rounds as the bundle, so that their sum and the bundle share the load.
    single_pass = [name for name in DEFAULT_METHODS if name != "integrated_gradients"]
    times = interleaved(
        {
            "bundle": lambda: explain_bundle(model, x, t, list(DEFAULT_METHODS), options),
            "bundle floor": floor(model, x, t, 3 + IG_STEPS),
            "ig": ours["integrated_gradients"],
            "ig floor": floor(model, x, t, IG_STEPS),
            "captum ig": theirs["integrated_gradients"],
            "captum others": lambda: [call() for call in others],
            "single": lambda: explain_bundle(model, x, t, single_pass, options),
            "single floor": floor(model, x, t, 3),
        },
        repeats,
    )
    times["captum sum"] = [a + b for a, b in zip(times["captum ig"], times["captum others"], strict=True)]
    # The best Captum / bundle could be if the bundle cost only its 3 + 50 rows at Captum's own IG cost per row.
    times["bound"] = [
        total / (ig * (3 + IG_STEPS) / IG_STEPS)
        for total, ig in zip(times["captum sum"], times["captum ig"], strict=True)
    ]
    median = {name: statistics.median(values) for name, values in times.items()}
    rows.append(
        (
            label,
            "default bundle",
            median["bundle"],
            median["captum sum"],
            paired_ratio(times, "captum sum", "bundle"),
            paired_ratio(times, "bundle", "bundle floor"),
            median["bound"],
        )
    )
    rows.append(
        (
            label,
            "IG-50 vs 50 batched passes",
            median["ig"],
            median["captum ig"],
            paired_ratio(times, "captum ig", "ig"),
            paired_ratio(times, "ig", "ig floor"),
            None,
        )
    )
    rows.append(
        (
            label,
            "7 single-pass maps (bundle without IG)",
            median["single"],
            median["captum others"],
            paired_ratio(times, "captum others", "single"),
            paired_ratio(times, "single", "single floor"),
            None,
        )
    )
    print(
        f"{label:>14} default bundle {median['bundle'] * 1e3:.1f} ms, Captum sum {median['captum sum'] * 1e3:.1f} "
        f"ms (x{rows[-3][4]:.2f}, bound x{median['bound']:.2f}), bundle/floor {rows[-3][5]:.2f}; "
        f"IG/floor {rows[-2][5]:.2f}; 7 single-pass maps x{rows[-1][4]:.2f} of Captum's 7 calls",
        flush=True,
    )
    return rows, calibration


def batch_case(repeats: int, device: torch.device) -> dict:
    """Issue 20's case: the default bundle of one DenseNet-121 image (3 + 50 path rows + the baseline's = 54
    rows) in calibrated batches and in batches as large as memory allows (a copy of the model, never
    calibrated), in interleaved rounds; with this process's allocator."""
    model = densenet121().to(device)
    plain = copy.deepcopy(model)
    x, t = torch.randn(1, 1, 224, 224, device=device), torch.tensor([1], device=device)
    calibration = calibrate(model, x, model_id="DenseNet-121 224", store=BatchSizeStore(), busy_share=1.0)
    options = BundleOptions(target_layer=str(model.target_layer), n_steps=IG_STEPS)
    rows = 3 + IG_STEPS + 1
    batches = {
        name: [part.stop - part.start for part in chunks(rows, rows_per_batch(net, x, rows_needed=rows))]
        for name, net in (("calibrated", model), ("memory", plain))
    }
    times = interleaved(
        {
            "calibrated": lambda: explain_bundle(model, x, t, list(DEFAULT_METHODS), options),
            "memory": lambda: explain_bundle(plain, x, t, list(DEFAULT_METHODS), options),
        },
        repeats,
    )
    allocator = " ".join(f"{k}={os.environ[k]}" for k in ALLOCATOR if k in os.environ) or "glibc default"
    result = {
        "allocator": allocator,
        "size": calibration.size,
        "rows_per_s": calibration.rows_per_s,
        "calibration_s": calibration.seconds,
        "others_cpu": calibration.others_cpu,
        "batches": batches,
        "seconds": {name: statistics.median(values) for name, values in times.items()},
        "ratio": paired_ratio(times, "memory", "calibrated"),
        "load": load_average(),
    }
    print(f"54-row DenseNet-121 bundle, {allocator}: {json.dumps(result)}", flush=True)
    return result


def batch_case_default_allocator(repeats: int) -> dict:
    """`batch_case` in a child process under glibc's default allocator, as a worker runs."""
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR}
    done = subprocess.run(
        [sys.executable, __file__, "--batch-case-only", "--default-allocator", "--repeats-large", str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"


def busy_seconds() -> tuple[float, float]:
    """CPU seconds used so far by the whole machine (/proc/stat, all but idle and iowait) and by this process."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    own = os.times()
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def others_share(run: Callable[[], T]) -> tuple[T, float | None]:
    """`run()`'s result and the share of the machine's CPU that other processes used meanwhile (the load
    average counts this benchmark's own threads: this does not)."""
    if not Path("/proc/stat").exists():
        return run(), None
    (machine_0, own_0), wall_0 = busy_seconds(), time.perf_counter()
    result = run()
    (machine_1, own_1), wall = busy_seconds(), time.perf_counter() - wall_0
    return result, max(0.0, ((machine_1 - machine_0) - (own_1 - own_0)) / (wall * (os.cpu_count() or 1)))


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU: {cpu}, {os.cpu_count()} cores"
    return (
        f"{device}; Python {platform.python_version()}, torch {torch.__version__}, captum {captum.__version__}; "
        f"{torch.get_num_threads()} threads; allocator MALLOC_MMAP_MAX_={os.environ.get('MALLOC_MMAP_MAX_')} "
        f"MALLOC_TRIM_THRESHOLD_={os.environ.get('MALLOC_TRIM_THRESHOLD_')}"
    )


def bound_section(rows: list) -> list[str]:
    """Why the bundle's Captum / Lumen ratio is bounded when IG-50 dominates, with this run's numbers."""
    lines = [
        "## Why the bundle cannot be 2x faster than the Captum calls",
        "",
        "The bundle computes the same eight maps with the same parameters (IG: 50 Gauss-Legendre steps, as "
        "Captum's default). Its work is 3 rows (normal, guided, deconv) + 50 path rows = 53 forward + backward "
        "rows per image, plus the baseline's row for the convergence delta (Captum's IG skips the delta by "
        "default). Captum's eight calls make 50 path rows (IG, one batch) + 8 single-row passes (guided Grad-CAM "
        "makes two; the two Grad-CAM passes stop at the layer) = about 58 rows. So even if the bundle cost "
        "only its 53 rows at Captum's own IG cost per row, Captum / Lumen could be at most",
        "",
        "    bound = Captum sum / (Captum IG-50 x 53 / 50)",
        "",
        "which is about 58 / 53 = 1.09 when a single-row call costs what a batched row costs, more where "
        "single rows cost more per row than batched ones (the small DR model, where a call's fixed costs "
        "dominate). The measured ratio can pass the bound only by cheaper rows (another batch size than "
        "Captum's one batch of 50, or the noise of a shared machine), not by skipping work. 2x would need the "
        "bundle to make fewer than about 58 / 2 = 29 rows, i.e. fewer IG steps than Captum gets: not a fair "
        "comparison. Where passes can be shared the bundle does meet 2x: its seven single-pass maps take 3 "
        "rows (normal, guided, deconv) against Captum's seven calls' 8 passes (row `7 single-pass maps` above; "
        "its floor is 3 plain rows). This run:",
        "",
        "| network | Captum IG-50 ms | Captum other 7 calls ms | bound | measured |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, method, _lumen, captum_sum, ratio, _floor, bound in rows:
        if method == "default bundle":
            ig = next(r[3] for r in rows if r[0] == label and r[1] == "IG-50 vs 50 batched passes")
            lines.append(f"| {label} | {ig * 1e3:.1f} | {(captum_sum - ig) * 1e3:.1f} | {bound:.2f} | {ratio:.2f} |")
    return lines


def write_markdown(
    path: Path,
    rows: list,
    info: str,
    repeats: dict[str, int],
    seconds: float,
    loads: tuple[str, str],
    others: dict[str, float | None],
) -> None:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value * 1e3:.1f}"

    def ratio(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    lines = [
        "# Attribution benchmark",
        "",
        "Generated by `bench/attribution.py` (re-run it to refresh this page). Batch 1, random inputs, medians of "
        f"{', '.join(f'{k}: {v}' for k, v in repeats.items())} rounds after a warm-up; full run {seconds:.0f} s.",
        "",
        f"Machine: {info}.",
        "",
        f"Shared machine. Load average (1, 5, 15 min) at the start: {loads[0]}; at the end: {loads[1]} (this "
        "benchmark's own 2 threads count there). CPU used by other processes while each network was measured: "
        + ", ".join(f"{label} {share:.0%}" if share is not None else f"{label} n/a" for label, share in others.items())
        + " of the machine. With other work on 2 cores absolute times are unreliable and every pass pays a toll "
        "(the threads wait for each other at each op), so the ratios below are taken within each round of calls "
        "made in turn.",
        "",
        "Columns: Lumen and Captum medians; `Captum / Lumen` (> 1: Lumen faster), the median over rounds of "
        "the ratio; `vs floor`: Lumen over plain forward + backward passes of the same rows batched the same way "
        "(default bundle: 1 normal + 1 guided + 1 deconv + 50 path rows; IG: 50 path rows; the 7 single-pass "
        "maps: 3 rows), the median over rounds. The last three rows of a network are measured in their own "
        "rounds, Captum's calls (the sum of eight for the bundle, of the seven other than IG for the "
        "single-pass maps) in the same rounds as Lumen's and the floors. Lumen's bundle and "
        "IG also send "
        "the rows at the ends of the path for the convergence delta (IG: x and the baseline; the bundle: the "
        "baseline, x's logits come from the normal row), in the same batches: they count against Lumen here. "
        "`bound`: see below. IG: 50 Gauss-Legendre steps in both.",
        "",
        "| network | method | Lumen ms | Captum ms | Captum / Lumen | vs floor | bound |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {n} | {m} | {ms(a)} | {ms(b)} | {ratio(c)} | {ratio(d)} | {ratio(e)} |" for n, m, a, b, c, d, e in rows
    ]
    lines += ["", *bound_section(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, DR model and ResNet-18 only")
    parser.add_argument("--repeats", type=int, default=5, help="rounds for the small DR model")
    parser.add_argument("--repeats-large", type=int, default=3, help="rounds for the 224 px networks")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "reports" / "benchmarks.md",
        help="report to write (default under reports/; --out docs/benchmarks.md publishes it)",
    )
    parser.add_argument("--default-allocator", action="store_true", help="keep glibc's default allocator")
    parser.add_argument(
        "--batch-case-only",
        action="store_true",
        help="only the 54-row DenseNet-121 case; its result as JSON on the last line",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # Captum warns on every guided call
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.batch_case_only:
        with torch.inference_mode(False):
            print(json.dumps(batch_case(args.repeats_large, device)), flush=True)
        return
    nets = [
        ("DR (28 px)", dr_model, (3, 28, 28), 1 if args.quick else args.repeats),
        ("ResNet-18 224", resnet18, (3, 224, 224), 1 if args.quick else args.repeats_large),
    ]
    if not args.quick:
        nets.append(("DenseNet-121 224", densenet121, (1, 224, 224), args.repeats_large))
    start, rows, load_at_start = time.perf_counter(), [], load_average()
    others: dict[str, float | None] = {}
    calibrations: dict[str, Calibration] = {}
    cases: list[dict] = []
    print(f"load average {load_at_start}", flush=True)
    with torch.inference_mode(False):
        for label, build, shape, repeats in nets:
            (network_rows, calibrations[label]), share = others_share(
                lambda build=build, label=label, shape=shape, repeats=repeats: bench_network(
                    label, build(), shape, repeats, device
                )
            )
            rows += network_rows
            others[label] = share
            print(f"{label}: other processes used {share:.0%} of the CPU" if share is not None else "", flush=True)
        if not args.quick:
            cases = [batch_case(args.repeats_large, device), batch_case_default_allocator(args.repeats_large)]
    write_markdown(
        args.out,
        rows,
        machine(),
        {label: r for label, _, _, r in nets},
        time.perf_counter() - start,
        (load_at_start, load_average()),
        others,
    )
    with args.out.open("a") as page:
        page.write("\n".join(["", *calibration_section(calibrations, cases)]) + "\n")
    print(f"wrote {args.out}")


def calibration_section(calibrations: dict[str, Calibration], cases: list[dict]) -> list[str]:
    """The batch sizes measured per network, and the 54-row DenseNet-121 case under both allocators."""
    lines = [
        "## Batch sizes by measurement",
        "",
        "A worker times a few batch sizes of each model when it first loads it (`LUMEN_BATCH_CALIBRATION`, "
        "`models/explain/batch_calibration.py`): forward + backward passes of 1, 2, 4, ... rows up to the memory "
        "bound, grown until two sizes in a row are no faster, in 3 interleaved rounds within a few seconds; it keeps "
        "the smallest size within 5% of the best rows/s (per model, row shape, machine, threads, torch version and "
        "allocator, in `LUMEN_DATA_DIR/batch-sizes.json`), and the explainers send at most that many rows at once, "
        "never more than memory allows. Before, batches were as large as memory allows (`memory bound`: half the "
        "free memory, at most 32 rows or, of small rows, up to 1 GiB). A worker neither uses nor keeps a size "
        "measured while other processes took more than 25% of the CPU (it batches as before then); this benchmark "
        "uses it and says how busy the machine was. This run measured, before the rounds above (which use these "
        "sizes):",
        "",
        "| network | rows/s per batch size (forward + backward) | kept | memory bound | seconds | CPU of others |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, cal in calibrations.items():
        rates = ", ".join(f"{size}: {rate:.3g}" for size, rate in cal.rows_per_s.items())
        others = "n/a" if cal.others_cpu is None else f"{cal.others_cpu:.0%}"
        lines.append(f"| {label} | {rates} | {cal.size} | {cal.memory_bound} | {cal.seconds:.1f} | {others} |")
    if not cases:
        return lines
    lines += [
        "",
        "Issue 20's case: the default bundle of one DenseNet-121 image, 54 rows (3 single-pass rows, 50 path "
        "rows, the baseline's), in the calibrated batches and in batches as large as memory allows, measured in "
        "the same interleaved rounds (medians of 3); under this benchmark's fixed allocator and, in a child "
        "process, under glibc's default one, which a worker uses unless told otherwise. Each process calibrated "
        "its own size first.",
        "",
        "| allocator | rows/s per batch size | calibrated batches | s | memory-sized batches | s | memory / calibrated "
        "| load average |",
        "|---|---|---|---:|---|---:|---:|---|",
    ]
    for case in cases:
        rates = ", ".join(f"{size}: {float(rate):.3g}" for size, rate in case["rows_per_s"].items())
        lines.append(
            f"| {case['allocator']} | {rates} | {' + '.join(map(str, case['batches']['calibrated']))} | "
            f"{case['seconds']['calibrated']:.2f} | {' + '.join(map(str, case['batches']['memory']))} | "
            f"{case['seconds']['memory']:.2f} | {case['ratio']:.2f} | {case['load']} |"
        )
    lines += [
        "",
        "Earlier figures: the version of this page measured with batches as large as memory allows reported "
        "DenseNet-121's bundle at 1.30x and IG-50 at 1.21x Captum's speed. They did not reproduce (1.12x and "
        "0.94x on a quiet machine, issue 20), and the 1.30 was above that run's own bound of 1.19, which only "
        "cheaper rows or noise can pass: noise of a shared machine, not speed. The tables above replace them.",
    ]
    return lines


if __name__ == "__main__":
    main()
