"""Benchmark: what explanations beyond heatmaps add to a job (`workers.evidence.compute`: the nearest reference
cases and the concept evidence) against the prediction they come with (`uncertainty.estimate_batch`, MC dropout).

Run: `.venv/bin/python bench/beyond.py [--rounds 20] [--out reports/beyond.md]`.

For each shipped model with a reference library or a concept bank, one input of the model's size (a real
IDRiD photograph for the fundus models, a real NIH test radiograph for the chest model, prepared as
served) is timed in alternating rounds, after one warm-up each: the prediction, and the evidence. Medians over
rounds, their ratio; 2 CPU threads. Writes a markdown table with the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from app.config import get_settings  # noqa: E402
from models import uncertainty  # noqa: E402
from models.card import ModelCard, scan_cards  # noqa: E402
from models.preprocessing import prepare_with_region  # noqa: E402
from models.registry import load_model  # noqa: E402
from workers import evidence  # noqa: E402

THREADS = 2
MODELS = ("dr-grading-retinamnist", "fundus-lesions-idrid", "cxr-nih14")


def _image(card: ModelCard) -> np.ndarray:
    """A real image of the model's kind, as the worker decodes it (H, W, C uint8 or H, W)."""
    if card.input.colour == "rgb":
        with Image.open(ROOT / "data" / "idrid" / "IDRiD_05.jpg") as photo:
            return np.asarray(photo.convert("RGB"))
    with np.load(ROOT / "data" / "nih_cxr14_test.npz") as archive:
        return archive["images"][0]


def _median_seconds(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        mark = time.perf_counter()
        call()
        times.append(time.perf_counter() - mark)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "beyond.md")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    cards = {card.name: card for card in scan_cards(get_settings().model_dirs).cards}
    rows = []
    for name in MODELS:
        card = cards[name]
        model = load_model(card)
        x = prepare_with_region(_image(card), card)[0]
        predicted = uncertainty.estimate_batch(model, x, card)
        target = [int(torch.argmax(predicted[0].probabilities))]
        found = evidence.sources_of(card)
        evidence.compute(model, card, x, target)  # warm-up
        predict_s = _median_seconds(lambda: uncertainty.estimate_batch(model, x, card), args.rounds)  # noqa: B023
        evidence_s = _median_seconds(lambda: evidence.compute(model, card, x, target), args.rounds)  # noqa: B023
        rows.append((name, "x".join(map(str, card.input.size)), len(found.library) if found.library else 0,
                     len(found.bank.concepts) if found.bank else 0, predict_s, evidence_s))
    load = os.getloadavg()
    lines = [
        "# Explanations beyond heatmaps: their cost in a job",
        "",
        f"{platform.processor() or platform.machine()}, {THREADS} threads, torch {torch.__version__}; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; medians of {args.rounds} rounds, batch of 1.",
        "",
        "| model | input | library cases | concepts | prediction (MC dropout) s | similar + concepts s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, size, cases, concepts, predict_s, evidence_s in rows:
        lines.append(f"| {name} | {size} | {cases} | {concepts} | {predict_s:.4f} | {evidence_s:.4f} | "
                     f"{evidence_s / predict_s:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
