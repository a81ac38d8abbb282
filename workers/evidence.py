"""Explanations beyond heatmaps, computed with a job's prediction: the nearest confirmed cases of the model's
reference library (models/similar.py) and the concept evidence of its concept bank (models/concepts.py).

A model folder ships them as `reference.npz` and `concepts.npz` + `concepts.json` beside its card; a model
without them gets None in the prediction's `similar_cases` / `concepts` and the reading room says nothing of
them. Both are loaded once per worker process, like the model.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models import concepts as concept_vectors
from models import similar
from models.card import ModelCard, file_sha256

logger = logging.getLogger(__name__)
_lock = threading.Lock()

SIMILAR_K = 5
VALIDATED_P = 0.05



@dataclass(frozen=True)
class Sources:
    library: similar.ReferenceLibrary | None
    bank: concept_vectors.ConceptBank | None


def _library(card: ModelCard) -> similar.ReferenceLibrary | None:
    """The model's reference library; None where it has none, or where the file is not the one its card measured
    (its sha256 differs): similar cases the card's precision does not describe are not shown."""
    path = Path(card.folder) / similar.REFERENCE_FILE
    if not path.exists():
        return None
    expected = ((card.evaluation.get("similar_cases") or {}).get("library") or {}).get("sha256")
    if expected and file_sha256(path) != expected:
        logger.error("model %s %s: %s differs from the library its card measured (sha256 %s); no similar cases "
                     "are shown until the recipe is run again", card.name, card.version, path, expected[:12])
        return None
    return similar.ReferenceLibrary.load(path)


_loaded: dict[tuple[str, str, str], Sources] = {}


def _load_sources(card: ModelCard) -> Sources:
    root = Path(card.folder)
    library = _library(card)
    name, version = card.name, card.version
    bank = concept_vectors.load_bank(root)
    logger.info("model %s %s: reference library %s, concept bank %s", name, version,
                len(library) if library is not None else "none", bank.concepts if bank is not None else "none")
    return Sources(library, bank)


def sources_of(card: ModelCard) -> Sources:
    """The model's reference library and concept bank (None where its folder has none); loaded once."""
    with _lock:
        key = (card.name, card.version, str(card.folder))
        if key not in _loaded:
            _loaded[key] = _load_sources(card)
        return _loaded[key]


def _similar_rows(neighbours: list[similar.Neighbour]) -> list[dict[str, Any]]:
    rows = []
    for rank, neighbour in enumerate(neighbours, start=1):
        label = neighbour.label
        indices = [int(i) for i in label] if isinstance(label, tuple) else [int(label)]
        rows.append({"rank": rank, "index": neighbour.index, "case_id": neighbour.case_id,
                     "label_indices": indices, "similarity": round(neighbour.similarity, 6)})
    return rows


def compute(
    model: torch.nn.Module, card: ModelCard, x: torch.Tensor, targets: list[int]
) -> tuple[list[dict[str, Any]], float]:
    """Per input row: {"similar_cases": [...] | None, "similar_thumbnails": [base64 PNG] | None, "concepts": [...] |
    None}; and the seconds it took."""
    mark = time.perf_counter()
    found = sources_of(card)
    results: list[dict[str, Any]] = [
        {"similar_cases": None, "similar_thumbnails": None, "concepts": None} for _ in targets
    ]
    # Explanations beside the prediction, not the prediction: one that cannot be computed (a network without the
    # layer its bank names, say) is logged and left out, and the job goes on.
    if found.library is not None:
        try:
            neighbours = similar.nearest(found.library, similar.embed(model, x), k=SIMILAR_K)
        except (RuntimeError, ValueError):
            logger.exception("model %s %s: similar cases not computed", card.name, card.version)
        else:
            for result, row in zip(results, neighbours, strict=True):
                result["similar_cases"] = _similar_rows(row)
                result["similar_thumbnails"] = [
                    base64.b64encode(found.library.thumbnails[neighbour.index]).decode("ascii") for neighbour in row
                ]
    if found.bank is not None:
        try:
            evidence = concept_vectors.concept_evidence(model, found.bank, x, targets)
        except (RuntimeError, ValueError):
            logger.exception("model %s %s: concept evidence not computed", card.name, card.version)
        else:
            for result, items in zip(results, evidence, strict=True):
                result["concepts"] = [_concept_row(item) for item in items]
    return results, time.perf_counter() - mark


def _concept_row(item: concept_vectors.ConceptEvidence) -> dict[str, Any]:
    """One concept's evidence as stored with the prediction (app/reading/schemas.py ConceptEvidence)."""
    return {
        "concept": item.concept.replace("_", " "),  # as clinicians name it: "hard exudates"
        "sensitivity": round(item.sensitivity, 6),
        "strength": item.strength,
        "accuracy": round(item.heldout_accuracy, 4),
        # Whether the concept vector told held-out examples of the concept from random ones better than chance
        # (one-sided binomial test, p < 0.05): an unvalidated concept is listed but never told as evidence.
        "validated": bool(item.heldout_p < VALIDATED_P),
        "tcav_score": round(item.tcav_score, 4),
        "tcav_p": float(f"{item.tcav_p:.3g}"),
    }
