"""Recipe "similar": the reference library (`models.similar`) of each served model, and how useful it is.

`python -m models.recipes.similar` writes `reference.npz` into each model folder below and the measurements
into the folder's evaluation.json under "similar_cases". The weights and the card are untouched.

- "dr-grading-retinamnist": RetinaMNIST train 1080 + val 120; measured on test (400).
- "cxr-nih14": nih-cxr14-621 train 358 + val 126 (labels.csv `split`); measured on test (137). Labels are the
  card's findings only (effusion, emphysema): the library answers for what the model reads.

Every image goes through the served preprocessing (`models.ood.prepared_batches`, i.e. `prepare` with the
card) before `models.similar.embed`. Test-split images never enter a library. The measure is precision@5 on the
test split (`models.similar.precision_at_k`) with a percentile bootstrap 95% interval over the queries, against
the precision of a neighbour drawn at random (`label_prior_precision`).

Thumbnails keep each file under 2 MB: RetinaMNIST's 28 px images with 6 bits a colour channel (each level moved
to the middle of its bin, at most 2 of 255 off), as 8-bit PNGs of all 1200 took 2.3 MB with the embeddings;
radiographs at RADIOGRAPH_THUMBNAIL_SIDE px, 8-bit grey.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import stats

from models import ood, similar
from models.card import ModelCard, load_card
from models.datasets import load_medmnist
from models.recipes import common, cxr_nih
from models.registry import load_model

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "models" / "zoo"
RETINA_DATA = ROOT.parent / "shared" / "data" / "retina" / "retinamnist.npz"
NIH_DATA = cxr_nih.DATA
K = 5
LIBRARY_SPLITS = ("train", "val")
TEST_SPLIT = "test"
RETINA_THUMBNAIL_BITS = 6
RADIOGRAPH_THUMBNAIL_SIDE = 64
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 2000, 2017
RETINA_SOURCE = (
    "RetinaMNIST (MedMNIST v2) train + val; CC BY 4.0, cite Yang et al., Sci Data 2023, and Liu et al., Patterns 2022"
)
NIH_SOURCE = (
    "NIH ChestX-ray14, nih-cxr14-621 train + val (NIH Clinical Center, no use restrictions; cite Wang et al., "
    "CVPR 2017, acknowledge the NIH Clinical Center)"
)


@dataclass(frozen=True)
class Cases:
    """One split of a model's data: ids, images as decoded (for `prepare`), labels (N,) or (N, L), thumbnails."""

    split: str
    case_ids: list[str]
    images: list[np.ndarray]
    labels: np.ndarray
    thumbnails: list[bytes]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def retina_thumbnail(image: np.ndarray) -> bytes:
    """(28, 28, 3) uint8 -> PNG with RETINA_THUMBNAIL_BITS bits a channel, each level at its bin's middle."""
    drop = 8 - RETINA_THUMBNAIL_BITS
    levels = (image >> drop << drop) | (1 << (drop - 1))
    return _png(Image.fromarray(levels.astype(np.uint8)))


def radiograph_thumbnail(image: np.ndarray) -> bytes:
    """(H, W) grey levels 0-255 -> 8-bit grey PNG, the longer side RADIOGRAPH_THUMBNAIL_SIDE px (antialiased)."""
    thumbnail = Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8))
    thumbnail.thumbnail((RADIOGRAPH_THUMBNAIL_SIDE, RADIOGRAPH_THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    return _png(thumbnail)


def retina_cases(card: ModelCard, data: Path) -> dict[str, Cases]:
    """RetinaMNIST's splits, case ids "retinamnist/<split>/<index in split, 4 digits>"."""
    splits = load_medmnist(data, num_classes=card.num_classes)
    return {
        name: Cases(
            split=name,
            case_ids=[f"retinamnist/{name}/{i:04d}" for i in range(len(split))],
            images=list(split.images),
            labels=split.labels.astype(np.int64),
            thumbnails=[retina_thumbnail(image) for image in split.images] if name != TEST_SPLIT else [],
        )
        for name, split in splits.items()
    }


def nih_cases(card: ModelCard, data: Path) -> dict[str, Cases]:
    """nih-cxr14-621's splits with the card's findings as (N, L) 0/1 labels, case ids "nih/<file name>"."""
    columns = {cxr_nih.display_name(finding): finding for finding in cxr_nih.FINDINGS}
    rows = cxr_nih.read_labels(data)
    cases = {}
    for name in (*LIBRARY_SPLITS, TEST_SPLIT):
        chosen = [row for row in rows if row["split"] == name]
        images = [cxr_nih.read_radiograph(data / row["file"]) for row in chosen]
        cases[name] = Cases(
            split=name,
            case_ids=[f"nih/{Path(row['file']).name}" for row in chosen],
            images=images,
            labels=np.array([[int(row[columns[label]]) for label in card.labels] for row in chosen], dtype=np.uint8),
            thumbnails=[radiograph_thumbnail(image) for image in images] if name != TEST_SPLIT else [],
        )
    return cases


def embed_cases(model: torch.nn.Module, card: ModelCard, images: list[np.ndarray]) -> np.ndarray:
    """(N, D) unit embeddings of decoded images, prepared as served."""
    device = next(model.parameters()).device
    return np.concatenate([similar.embed(model, x) for x in ood.prepared_batches(images, card, device)])


def build_library(
    model: torch.nn.Module, card: ModelCard, cases: list[Cases], *, source: str
) -> similar.ReferenceLibrary:
    """The library of the given (non-test) splits."""
    if any(part.split == TEST_SPLIT for part in cases):
        raise ValueError("the test split is what a reference library is measured on; it never enters one")
    return similar.ReferenceLibrary(
        embeddings=np.concatenate([embed_cases(model, card, part.images) for part in cases]),
        labels=np.concatenate([part.labels for part in cases]),
        case_ids=[case_id for part in cases for case_id in part.case_ids],
        splits=[part.split for part in cases for _ in part.case_ids],
        thumbnails=[thumbnail for part in cases for thumbnail in part.thumbnails],
        multilabel=card.task == "multilabel",
        source=source,
    )


def measure(library: similar.ReferenceLibrary, model: torch.nn.Module, card: ModelCard, test: Cases) -> dict[str, Any]:
    """Precision@K of the test split's queries with its bootstrap 95% interval, the label prior, and both per
    query label (where the chance level of a label's queries is that label's share of the library)."""
    queries = embed_cases(model, card, test.images)
    per_query = similar.per_query_precision(library, queries, test.labels, K)
    interval = stats.bootstrap(
        (per_query,),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    ).confidence_interval
    return {
        "precision_at_k": round(float(per_query.mean()), 6),
        "precision_at_k_ci95": [round(float(interval.low), 6), round(float(interval.high), 6)],
        "label_prior": round(similar.label_prior_precision(library.labels, test.labels), 6),
        "n_queries": len(test.case_ids),
        "per_label": per_label(library, test.labels, per_query, card.labels),
    }


def per_label(
    library: similar.ReferenceLibrary, query_labels: np.ndarray, per_query: np.ndarray, names: list[str]
) -> dict[str, dict[str, float | int]]:
    """For each label of the queries (a class, or a positive set of findings): the number of queries, their
    precision@K, and the label's share of the library (a random neighbour's precision for those queries)."""
    library_rows = library.labels.reshape(len(library), -1)
    query_rows = query_labels.reshape(len(query_labels), -1)
    result = {}
    for row in np.unique(query_rows, axis=0):
        chosen = (query_rows == row).all(axis=1)
        result[_label_name(row, names, library.multilabel)] = {
            "n": int(chosen.sum()),
            "precision_at_k": round(float(per_query[chosen].mean()), 6),
            "library_share": round(float((library_rows == row).all(axis=1).mean()), 6),
        }
    return result


def _label_name(row: np.ndarray, names: list[str], multilabel: bool) -> str:
    if not multilabel:
        return names[int(row[0])]
    positive = [names[i] for i in np.flatnonzero(row)]
    return " + ".join(positive) if positive else "none of " + ", ".join(names)


def write_evaluation(folder: Path, entry: dict[str, Any]) -> None:
    """Set evaluation.json's "similar_cases" (the file's other keys untouched)."""
    path = folder / common.EVALUATION_FILE
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data["similar_cases"] = entry
    # indent=1, as `common.write_folder` writes the file: the other keys' lines stay as they were.
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def build_folder(
    folder: Path, cases_of: Callable[[ModelCard, Path], dict[str, Cases]], data: Path, *, source: str, test_split: str
) -> dict[str, Any]:
    """Build, save and measure one model folder's library; returns the "similar_cases" entry written."""
    started = time.perf_counter()
    card = load_card(folder)
    model = load_model(card)
    cases = cases_of(card, data)
    with common.deterministic_cpu(0):
        library = build_library(model, card, [cases[name] for name in LIBRARY_SPLITS], source=source)
        path = folder / similar.REFERENCE_FILE
        sha256 = library.save(path)
        # Measured on the library as read back: what the worker will load.
        measured = measure(similar.ReferenceLibrary.load(path), model, card, cases[TEST_SPLIT])
    entry = {
        "k": K,
        "library": {
            "n": len(library),
            "splits": list(LIBRARY_SPLITS),
            "file": similar.REFERENCE_FILE,
            "bytes": path.stat().st_size,
            "sha256": sha256,
            "embedding_dim": int(library.embeddings.shape[1]),
        },
        **measured,
        "test_split": test_split,
        "same_label": "the same positive set of the card's findings (the whole 0/1 row)"
        if library.multilabel
        else "the same class",
        "search": "exact cosine similarity of the L2-normalised input of the model's last linear layer",
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_evaluation(folder, entry)
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build and measure the similar-cases reference libraries.")
    parser.add_argument("--retina-data", type=Path, default=RETINA_DATA)
    parser.add_argument("--nih-data", type=Path, default=NIH_DATA)
    parser.add_argument("--zoo", type=Path, default=ZOO)
    args = parser.parse_args(argv)
    jobs = [
        ("dr-grading-retinamnist", retina_cases, args.retina_data, RETINA_SOURCE, "RetinaMNIST test (400)"),
        ("cxr-nih14", nih_cases, args.nih_data, NIH_SOURCE, "nih-cxr14-621 test (137 patients)"),
    ]
    for name, cases_of, data, source, test_split in jobs:
        entry = build_folder(args.zoo / name, cases_of, data, source=source, test_split=test_split)
        logger.info(
            "%s: library %d cases (%d bytes); precision@%d on %s %.3f [%.3f, %.3f] vs label prior %.3f; %.1f s",
            name,
            entry["library"]["n"],
            entry["library"]["bytes"],
            K,
            test_split,
            entry["precision_at_k"],
            *entry["precision_at_k_ci95"],
            entry["label_prior"],
            entry["seconds"],
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
