"""Similar confirmed cases: the reference cases nearest to an image in its model's embedding space.

A reference library ships with a model (`reference.npz` in its folder): the model's own training and validation
images, each with its confirmed label, a small thumbnail and its embedding, the input of the model's last
linear layer (`models.ood.embed`), L2-normalised so that the inner product is the cosine similarity. Test-split
images never enter a library: they are what its usefulness is measured on (`precision_at_k` against
`label_prior_precision`).

The worker calls, on a (B, C, *spatial) batch prepared as served (`models.preprocessing.prepare`)::

    library = ReferenceLibrary.load(card.folder / REFERENCE_FILE)
    neighbours = nearest(library, embed(model, x), k=5)  # B lists of k `Neighbour`s, most similar first

Search is exact (one matrix product) up to `EXACT_LIMIT` rows; a larger library is searched with an HNSW graph
(Malkov and Yashunin, "Efficient and robust approximate nearest neighbor search using Hierarchical Navigable
Small World graphs", IEEE TPAMI 2020) from faiss (Douze et al., "The Faiss library", 2024), imported only then.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models import ood
from models.reference import REFERENCE_FILE, ReferenceLibrary

__all__ = [
    "REFERENCE_FILE",
    "ReferenceLibrary",
    "Neighbour",
    "embed",
    "nearest",
    "search",
    "precision_at_k",
    "per_query_precision",
    "label_prior_precision",
]

# Up to this many rows an exact search of a batch takes milliseconds; past it the HNSW graph pays for itself.
EXACT_LIMIT = 20_000
_QUERY_CHUNK = 1024  # rows of queries per matrix product: bounds memory to chunk x N similarities


@dataclass(frozen=True)
class Neighbour:
    """One similar case: its row in the library, its id, its confirmed label (a class index, or the indices of
    the positive labels for a multilabel model) and its cosine similarity to the query."""

    index: int
    case_id: str
    label: int | tuple[int, ...]
    similarity: float


def embed(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """(B, D) float32 unit-length embeddings of (B, C, *spatial) prepared inputs: the input of the model's last
    linear layer, as `models.ood.embed` finds it (eval mode, no gradients)."""
    features = ood.embed(model, x)[0].cpu().numpy().astype(np.float32)
    return _unit_rows(features)


def _unit_rows(z: np.ndarray) -> np.ndarray:
    # A zero vector (a dead embedding) stays zero instead of becoming NaN: it is then similar to nothing.
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)


def nearest(
    library: ReferenceLibrary, query_embeddings: np.ndarray, k: int = 5, *, approximate: bool | None = None
) -> list[list[Neighbour]]:
    """The k library cases most similar to each query, most similar first.

    Args:
        library: the reference library.
        query_embeddings: (B, D) embeddings from `embed` (normalised here again, so any scale works).
        k: neighbours per query (at most the library's size).
        approximate: True: the HNSW index; False: exact search; None: exact up to `EXACT_LIMIT` rows.

    Returns:
        B lists of min(k, N) `Neighbour`s.
    """
    indices, similarities = search(library, query_embeddings, k, approximate=approximate)
    return [
        [
            Neighbour(int(i), library.case_ids[i], _label_of(library, int(i)), float(s))
            for i, s in zip(row, sims, strict=True)
        ]
        for row, sims in zip(indices, similarities, strict=True)
    ]


def search(
    library: ReferenceLibrary, query_embeddings: np.ndarray, k: int = 5, *, approximate: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`nearest` as arrays: (B, k) library rows and (B, k) cosine similarities, most similar first."""
    q = np.asarray(query_embeddings, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != library.embeddings.shape[1]:
        raise ValueError(f"queries must be (B, {library.embeddings.shape[1]}), got {q.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    q, k = _unit_rows(q), min(k, len(library))
    if approximate is None:
        approximate = len(library) > EXACT_LIMIT
    if approximate:
        similarities, indices = library._approximate_index.search(q, k)
        return indices.astype(np.int64), similarities.astype(np.float32)
    parts = [_exact(library.embeddings, q[start : start + _QUERY_CHUNK], k) for start in range(0, len(q), _QUERY_CHUNK)]
    if not parts:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _exact(embeddings: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    similarities = q @ embeddings.T
    top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
    top_similarities = np.take_along_axis(similarities, top, axis=1)
    order = np.argsort(-top_similarities, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).astype(np.int64), np.take_along_axis(top_similarities, order, axis=1)


def _label_of(library: ReferenceLibrary, row: int) -> int | tuple[int, ...]:
    if library.multilabel:
        return tuple(int(i) for i in np.flatnonzero(library.labels[row]))
    return int(library.labels[row])


def precision_at_k(
    library: ReferenceLibrary,
    query_embeddings: np.ndarray,
    query_labels: np.ndarray,
    k: int = 5,
    *,
    approximate: bool | None = None,
) -> float:
    """The mean over queries of the fraction of their k nearest cases whose label is the query's.

    For a multilabel library "the same label" means the same set of positive labels (the whole 0/1 row equal,
    "none of the labels" included), so that the chance level is `label_prior_precision` as for classes.

    Args:
        query_embeddings: (B, D) from `embed`; query_labels: (B,) class indices or (B, L) 0/1 rows.
    """
    return float(per_query_precision(library, query_embeddings, query_labels, k, approximate=approximate).mean())


def per_query_precision(
    library: ReferenceLibrary,
    query_embeddings: np.ndarray,
    query_labels: np.ndarray,
    k: int = 5,
    *,
    approximate: bool | None = None,
) -> np.ndarray:
    """(B,) each query's precision at k (see `precision_at_k`), e.g. for a bootstrap interval."""
    y = np.asarray(query_labels)
    if y.shape[:1] != (len(query_embeddings),) or y.shape[1:] != library.labels.shape[1:]:
        raise ValueError(
            f"query labels {y.shape} do not fit {len(query_embeddings)} queries and labels {library.labels.shape}"
        )
    indices, _ = search(library, query_embeddings, k, approximate=approximate)
    neighbour_labels = library.labels[indices]  # (B, k) or (B, k, L)
    same = neighbour_labels == y[:, None]
    if library.multilabel:
        same = same.all(axis=2)
    return same.mean(axis=1)


def label_prior_precision(library_labels: np.ndarray, query_labels: np.ndarray) -> float:
    """The precision a neighbour drawn at random from the library would get: sum over labels c of
    P_query(c) * P_library(c), where a label is a class, or a multilabel row's whole positive set."""
    library_labels, query_labels = np.asarray(library_labels), np.asarray(query_labels)
    if library_labels.shape[1:] != query_labels.shape[1:]:
        raise ValueError(f"library labels {library_labels.shape} and query labels {query_labels.shape} differ")
    rows = np.concatenate([library_labels, query_labels]).reshape(len(library_labels) + len(query_labels), -1)
    keys = np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)
    library_keys, query_keys = keys[: len(library_labels)], keys[len(library_labels) :]
    size = int(keys.max()) + 1
    p_library = np.bincount(library_keys, minlength=size) / len(library_keys)
    p_query = np.bincount(query_keys, minlength=size) / len(query_keys)
    return float(p_query @ p_library)
