"""Benchmark: the worker's compute of 8 jobs one by one against one batch of 8 (`workers.batch.compute`).

Run: `.venv/bin/python bench/worker_batching.py [--models dr-grading-retinamnist fundus-lesions-idrid]
[--jobs 8] [--rounds 5] [--rounds-large 1] [--images FOLDER] [--out reports/worker-batching.md]`.

For each shipped model, real fundus photographs (IDRiD, cropped) are decoded and prepared once, outside the
timing (each job does that alone in both cases). Then, in rounds that run both contenders in turn (the order
alternating, after a warm-up of one job), it times what the worker does between preparing and storing: the
uncertainty estimate, the default explanation bundle of `app.config` and each map's scores and resampling,
for the jobs one by one (`compute([job])` x N) and as one batch (`compute(all N)`). Medians over rounds;
images/s and the ratio, and the part that a batch shares (estimate + bundle, from the runs' own timings).
2 CPU threads (CUDA when present). Writes a markdown page with the machine and its load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from app.config import get_settings  # noqa: E402
from models.card import ModelCard, scan_cards  # noqa: E402
from models.preprocessing import prepare_with_region  # noqa: E402
from models.registry import load_model  # noqa: E402
from workers import batch  # noqa: E402

THREADS = 2
# The photographs shipped in data/idrid (downscaled); docs/worker-batching.md was measured on the full-size
# IDRiD crops, given with --images.
DEFAULT_IMAGES = ROOT / "data" / "idrid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dr-grading-retinamnist", "fundus-lesions-idrid"])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rounds-large", type=int, default=1, help="rounds for inputs of 256 px and more")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "worker-batching.md",
                        help="report to write (default under reports/; --out docs/worker-batching.md publishes it)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    methods = get_settings().default_methods
    cards = {card.name: card for card in scan_cards([ROOT / "models" / "zoo"]).cards}
    photos = sorted(args.images.glob("*.jpg"))[: args.jobs]
    if len(photos) < args.jobs:
        raise SystemExit(f"{args.images} has {len(photos)} photographs, {args.jobs} needed")
    rows = []
    load_before = os.getloadavg()
    for name in args.models:
        card = cards[name]
        rounds = args.rounds_large if max(card.input.size) >= 256 else args.rounds
        rows.append(measure(card, photos, methods, rounds=rounds, device=device))
    write_page(args.out, rows, methods, device=device, load=(load_before, os.getloadavg()), jobs=args.jobs)


def measure(card: ModelCard, photos: list[Path], methods: list[str], *, rounds: int, device: torch.device) -> dict:
    """Median seconds of the jobs one by one and as one batch, over interleaved rounds."""
    model = load_model(card, device=str(device))
    inputs = []
    for photo in photos:
        x, region = prepare_with_region(np.asarray(Image.open(photo).convert("RGB")), card, device=device)
        inputs.append(batch.Prepared(x, region, None))

    shared: dict[str, list[float]] = {"alone": [], "batch": []}

    def one_by_one() -> float:
        seconds = 0.0
        parts = 0.0
        for item in inputs:
            elapsed, [result] = _timed(lambda item=item: batch.compute(model, card, [item], methods))
            seconds, parts = seconds + elapsed, parts + result.timings["predict_s"] + result.timings["explain_s"]
        shared["alone"].append(parts)
        return seconds

    def together() -> float:
        elapsed, results = _timed(lambda: batch.compute(model, card, inputs, methods))
        shared["batch"].append(results[0].timings["predict_s"] + results[0].timings["explain_s"])
        return elapsed

    # Warm-up: one job alone (allocator, kernels, model caches), not timed.
    batch.compute(model, card, inputs[:1], methods)
    times: dict[str, list[float]] = {"alone": [], "batch": []}
    for index in range(rounds):
        order = [("alone", one_by_one), ("batch", together)]
        for key, run in order if index % 2 == 0 else reversed(order):
            times[key].append(run())
        print(f"{card.name} round {index + 1}: alone {times['alone'][-1]:.2f} s, batch {times['batch'][-1]:.2f} s")
    alone, batched = statistics.median(times["alone"]), statistics.median(times["batch"])
    row = {
        "model": card.name,
        "size": "x".join(map(str, card.input.size)),
        "rounds": rounds,
        "alone_s": alone,
        "batch_s": batched,
        "alone_ips": len(inputs) / alone,
        "batch_ips": len(inputs) / batched,
        "ratio": alone / batched,
        "alone_shared_s": statistics.median(shared["alone"]),
        "batch_shared_s": statistics.median(shared["batch"]),
    }
    print(
        f"{card.name}: one by one {row['alone_ips']:.2f} images/s, batch of {len(inputs)} {row['batch_ips']:.2f}"
        f" images/s, {row['ratio']:.2f}x"
    )
    return row


def _timed(run: Callable[[], list[batch.Computed]]) -> tuple[float, list[batch.Computed]]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, results


def write_page(out: Path, rows: list[dict], methods: list[str], *, device: torch.device, load, jobs: int) -> None:  # type: ignore[no-untyped-def]
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch {torch.__version__}, "
        f"{THREADS} threads, device {device}"
    )
    table = [
        "| model | input | rounds | one by one (s) | batch (s) | one by one (img/s) | batch (img/s) | ratio |"
        " estimate + bundle: one by one / batch (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        table.append(
            f"| {r['model']} | {r['size']} | {r['rounds']} | {r['alone_s']:.2f} | {r['batch_s']:.2f} |"
            f" {r['alone_ips']:.2f} | {r['batch_ips']:.2f} | {r['ratio']:.2f}x |"
            f" {r['alone_shared_s']:.2f} / {r['batch_shared_s']:.2f} |"
        )
    before, after = (", ".join(f"{v:.2f}" for v in values) for values in load)
    generated = "\n".join(
        [
            "<!-- generated by bench/worker_batching.py -->",
            f"Jobs: {jobs}. Methods: {', '.join(methods)}. Machine: {machine}. "
            f"Load average (1, 5, 15 min) before: {before}; after: {after}.",
            "",
            *table,
            "<!-- end generated -->",
        ]
    )
    text = out.read_text() if out.exists() else ""
    start, end = text.find("<!-- generated by"), text.find("<!-- end generated -->")
    if start >= 0 and end >= 0:
        text = text[:start] + generated + text[end + len("<!-- end generated -->") :]
    else:
        text = text + ("\n" if text else "") + generated + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(generated)


if __name__ == "__main__":
    main()
