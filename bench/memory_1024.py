"""Benchmark: the default explanation bundle on a 1024 px DenseNet-121 within a fixed memory limit.

Run: `.venv/bin/python bench/memory_1024.py [--limit-gib 12] [--steps 50] [--size 1024] [--out reports/memory-1024.md]`.

The most reported complaint about Captum is that integrated gradients runs out of memory on a chest
radiograph DenseNet unless batched by hand (its issues #538 and #1350): by default all path points go
through the network as one batch. Here each contender runs in its own process under the same address-space
limit (`ulimit -v`, set with RLIMIT_AS, so an out-of-memory ends in an allocation error, not in the kernel's
OOM killer on a shared machine):

- Captum's IntegratedGradients with its defaults (n_steps=50, no internal_batch_size);
- Lumen's default bundle (the eight default methods, IG-50 included), which plans its batches from the
  memory the process may still take (`models.explain.batching.available_memory`, which reads RLIMIT_AS,
  the cgroup limit and MemAvailable).

It records for each: whether it finished, its error, the wall time, the peak resident memory (ru_maxrss)
and, for Lumen, the rows per batch the planner chose and the planner's bytes-per-row estimate. The network
is the DenseNet-121 of bench/attribution.py (blocks 6, 12, 24, 16, growth 32, 1 channel, stride-4 stem),
random weights, one random 1024 x 1024 image. 2 CPU threads; CUDA when present (the limit then bounds host
memory only, and the GPU's free memory is what the planner reads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THREADS = 2
CONTENDERS = ("captum_integrated_gradients", "lumen_default_bundle")


def build(size: int):  # type: ignore[no-untyped-def]
    import torch

    from models.networks.densenet import DenseNet

    torch.manual_seed(0)
    model = DenseNet(spatial_dims=2, in_channels=1, num_classes=2, growth_rate=32, block_layers=(6, 12, 24, 16),
                     init_features=64, stem_stride=4).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    return model.to(device), x, torch.tensor([1], device=device)


def run_child(name: str, size: int, steps: int) -> dict[str, object]:
    """One contender, in this (limited) process; returns what it measured."""
    import torch

    torch.set_num_threads(THREADS)
    model, x, target = build(size)
    result: dict[str, object] = {"contender": name}
    started = time.perf_counter()
    try:
        if name == "captum_integrated_gradients":
            from captum.attr import IntegratedGradients

            maps = IntegratedGradients(model).attribute(x, target=target, n_steps=steps)
        else:
            from models.explain import batching
            from models.explain.bundle import DEFAULT_METHODS, BundleOptions, explain_bundle

            result["bytes_per_row"] = batching.bytes_per_row(model, x)
            result["available_bytes"] = batching.available_memory(x.device)
            result["rows_per_batch"] = batching.rows_per_batch(model, x, rows_needed=3 + steps)
            bundle = explain_bundle(model, x, target, list(DEFAULT_METHODS),
                                    BundleOptions(target_layer="features.relu_final", n_steps=steps))
            maps = bundle["integrated_gradients"]
            result["methods"] = list(DEFAULT_METHODS)
        result.update(finished=True, finite=bool(torch.isfinite(maps).all()))
    except (RuntimeError, MemoryError) as exc:  # torch reports a failed allocation as RuntimeError
        result.update(finished=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def run_limited(name: str, size: int, steps: int, limit: int) -> dict[str, object]:
    def limit_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, __file__, "--child", name, "--size", str(size), "--steps", str(steps)],
                          capture_output=True, text=True, preexec_fn=limit_address_space, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        # A crash outside the guarded call (e.g. an allocation failure the allocator could not report).
        return {"contender": name, "finished": False, "error": f"exit {done.returncode}: {done.stderr[-300:]}"}
    return json.loads(lines[-1])


def gib(value: object) -> str:
    return f"{int(value) / 2**30:.2f}" if isinstance(value, int | float) else ""


def write_markdown(path: Path, results: list[dict[str, object]], args: argparse.Namespace, info: str) -> None:
    lines = [
        f"# Explaining a {args.size} px DenseNet-121 within {args.limit_gib} GiB", "",
        "Generated by `bench/memory_1024.py` (re-run it to refresh this page). Each contender runs in its own "
        f"process under an address-space limit of {args.limit_gib} GiB (RLIMIT_AS): the same input (one random "
        f"{args.size} x {args.size} single-channel image), the same randomly initialised DenseNet-121 "
        "(blocks 6, 12, 24, 16, growth 32, stride-4 stem), integrated gradients with "
        f"{args.steps} Gauss-Legendre steps.", "",
        f"Machine: {info}.", "",
        "| contender | finished | wall s | peak RSS GiB | rows per batch | planner's estimate per row GiB | error |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r['contender']} | {'yes' if r.get('finished') else 'no'} | {r.get('seconds', '')} | "
                     f"{gib(r.get('peak_rss_bytes'))} | {r.get('rows_per_batch', '')} | "
                     f"{gib(r.get('bytes_per_row'))} | {str(r.get('error', '')).replace('|', '/')} |")
    lines += [
        "", "Captum's integrated gradients sends its path points through the network as one batch unless the "
        "caller sets `internal_batch_size` by hand. Lumen's bundle (gradient, saliency, input x gradient, "
        "GradCAM, guided backprop, deconvnet, guided GradCAM and integrated gradients) asks the planner how many "
        "rows the memory the process may still take holds (half of it, after a one-row probe of what the "
        "forward saves for the backward), and sends its rows in batches of that size; wall time on a shared "
        "2-core CPU is dominated by the passes themselves and says nothing about a GPU.", "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-gib", type=float, default=12.0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--only", choices=CONTENDERS, action="append", help="run only these contenders")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "memory-1024.md",
                        help="report to write (default under reports/; --out docs/memory-1024.md publishes it)")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.size, args.steps)), flush=True)
        return 0
    import captum
    import torch

    limit = int(args.limit_gib * 2**30)
    results = []
    for name in args.only or CONTENDERS:
        print(f"running {name} under {args.limit_gib} GiB ...", flush=True)
        results.append(run_limited(name, args.size, args.steps, limit))
        print(json.dumps(results[-1]), flush=True)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    info = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}; torch "
            f"{torch.__version__}, captum {captum.__version__}; {THREADS} threads; load average at the end {load}")
    write_markdown(args.out, results, args, info)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
