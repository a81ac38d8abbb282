"""Benchmark: what decoding a JPEG at a reduced DCT scale (`app.ingest.pixels.load_model_frame`) changes in a
model's input and output, and what it saves, against the full decode the worker did before.

Run: `.venv/bin/python bench/bounded_decode.py [--data ../shared/data] [--oversampling 1 2 4]
[--out reports/bounded_decode.md]`.

For each shipped model that reads JPEGs and each real JPEG it would be given (the fundus models: the 24
3410 x 2848 and two 4288 x 2848 IDRiD photographs of ../shared/data/idrid and the 25 1024 px copies in data/idrid;
the chest model: the 243 Hannover radiographs), the image is decoded in full and prepared (`prepare_with_region`),
then decoded at the coarsest scale keeping `oversampling` x the input's side on the image's shorter side and
prepared the same way. Reported per model and oversampling: how many images were reduced, the median seconds of
decode + prepare both ways, the largest difference of the network input (in 8-bit grey levels), of the region on
the full image (pixels), of any output probability (eval mode, the card's calibration temperature), and how
often the predicted label (or, multilabel, each label at 0.5) is the same. 2 CPU threads.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.config import get_settings  # noqa: E402
from app.ingest import pixels  # noqa: E402
from models import uncertainty  # noqa: E402
from models.card import ModelCard, scan_cards  # noqa: E402
from models.preprocessing import InputRegion, prepare_with_region  # noqa: E402
from models.registry import load_model  # noqa: E402

THREADS = 2
FUNDUS_MODELS = ("dr-grading-retinamnist", "fundus-lesions-idrid")
CHEST_MODELS = ("cxr-nih14",)


@dataclass
class Tally:
    reduced: int = 0
    images: int = 0
    full_s: list[float] = field(default_factory=list)
    reduced_s: list[float] = field(default_factory=list)
    input_levels: float = 0.0  # largest input difference, in 8-bit grey levels of the [0, 1] image
    region_px: float = 0.0
    probability: float = 0.0
    same_label: int = 0
    labels: int = 0


def _images(data: Path, kind: str) -> list[Path]:
    if kind == "fundus":
        full = sorted((data / "idrid" / "cropped").glob("*.jpg")) + sorted((data / "idrid" / "pristine").glob("*.jpg"))
        return full + sorted((ROOT / "data" / "idrid").glob("IDRiD_*[0-9].jpg"))
    return sorted((data / "hannover-covid19-cxr" / "images").glob("*.jp*g"))


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _prepared(frame: pixels.ModelFrame, card: ModelCard) -> tuple[torch.Tensor, InputRegion]:
    x, region = prepare_with_region(frame.array, card, voi=frame.voi)
    return x, region.on_image_of_shape(frame.full_shape)


def _region_difference(a: InputRegion, b: InputRegion) -> float:
    return float(max(abs(a.top - b.top), abs(a.left - b.left), abs(a.height - b.height), abs(a.width - b.width)))


def _labels(probabilities: torch.Tensor, card: ModelCard) -> torch.Tensor:
    if card.task == "multilabel":
        return probabilities >= 0.5
    return probabilities.argmax(dim=1, keepdim=True)


def measure(card: ModelCard, paths: list[Path], oversampling: list[int]) -> dict[int, Tally]:
    model = load_model(card).eval()
    temperature, multilabel = card.calibration_temperature, card.task == "multilabel"
    std = torch.tensor(card.input.std).view(1, -1, 1, 1)
    tallies = {k: Tally() for k in oversampling}
    for path in paths:
        data = path.read_bytes()
        full_frame, full_decode = _timed(pixels.load_model_frame, data, "jpeg", min_side=10**9)
        (x_full, region_full), full_prepare = _timed(_prepared, full_frame, card)
        with torch.no_grad():
            p_full = uncertainty.to_probabilities(model(x_full), temperature, multilabel=multilabel)
        for k, tally in tallies.items():
            min_side = k * max(card.input.size)
            frame, decode = _timed(pixels.load_model_frame, data, "jpeg", min_side=min_side)
            (x, region), prepare = _timed(_prepared, frame, card)
            with torch.no_grad():
                p = uncertainty.to_probabilities(model(x), temperature, multilabel=multilabel)
            tally.images += 1
            tally.reduced += frame.array.shape[:2] != full_frame.array.shape[:2]
            tally.full_s.append(full_decode + full_prepare)
            tally.reduced_s.append(decode + prepare)
            tally.input_levels = max(tally.input_levels, float(((x - x_full).abs() * std).max()) * 255)
            tally.region_px = max(tally.region_px, _region_difference(region, region_full))
            tally.probability = max(tally.probability, float((p - p_full).abs().max()))
            same = _labels(p, card) == _labels(p_full, card)
            tally.same_label += int(same.sum())
            tally.labels += same.numel()
    return tallies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--oversampling", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bounded_decode.md")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    cards = {card.name: card for card in scan_cards(get_settings().model_dirs).cards}
    lines = [
        f"# Reduced-scale JPEG decode ({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, torch "
        f"{torch.__version__}, {THREADS} threads, load average {os.getloadavg()[0]:.2f})",
        "",
        "| model | input | oversampling | images | reduced | decode + prepare full (median s) | reduced (median s) "
        "| input max diff (grey levels) | region max diff (px) | probability max diff | same label |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in FUNDUS_MODELS + CHEST_MODELS:
        card = cards[name]
        paths = _images(args.data, "fundus" if name in FUNDUS_MODELS else "chest")
        for k, tally in measure(card, paths, args.oversampling).items():
            lines.append(
                f"| {name} | {'x'.join(map(str, card.input.size))} | {k} | {tally.images} | {tally.reduced} "
                f"| {statistics.median(tally.full_s):.3f} | {statistics.median(tally.reduced_s):.3f} "
                f"| {tally.input_levels:.2f} | {tally.region_px:.0f} | {tally.probability:.4f} "
                f"| {tally.same_label}/{tally.labels} |"
            )
            print(lines[-1], flush=True)
    lines.append(f"\nLoad average at the end: {os.getloadavg()[0]:.2f}.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as out:
        out.write("\n".join(lines) + "\n\n")
    print(f"appended to {args.out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
