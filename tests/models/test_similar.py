"""Similar confirmed cases (models/similar.py): exact values on tiny libraries, the .npz round trip and its
refusals, exact against approximate search, and the shipped libraries with the shipped models on real test
images from the repository (RetinaMNIST test 400, the NIH test sample)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import ood, similar
from models.card import load_card
from models.datasets import load_medmnist
from models.preprocessing import prepare
from models.registry import load_model
from models.similar import Neighbour, ReferenceLibrary

ROOT = Path(__file__).resolve().parents[2]
ZOO, DATA = ROOT / "models" / "zoo", ROOT / "data"
RETINA, NIH = ZOO / "dr-grading-retinamnist", ZOO / "cxr-nih14"
PNG = b"\x89PNG\r\n\x1a\n"
MAX_FILE_BYTES = 2_000_000


def _library(embeddings: np.ndarray, labels: np.ndarray, *, multilabel: bool = False) -> ReferenceLibrary:
    n = len(embeddings)
    return ReferenceLibrary(
        embeddings=similar._unit_rows(np.asarray(embeddings, dtype=np.float32)),
        labels=labels,
        case_ids=[f"synthetic/{i}" for i in range(n)],
        splits=["train" if i % 2 else "val" for i in range(n)],
        thumbnails=[PNG + bytes([i % 256]) * (i % 7) for i in range(n)],
        multilabel=multilabel,
        source="synthetic",
    )


@pytest.fixture(scope="module")
def retina_test() -> tuple[torch.Tensor, np.ndarray]:
    """RetinaMNIST's test split prepared as the worker prepares an upload: (400, 3, 28, 28) and (400,) grades."""
    card = load_card(RETINA)
    split = load_medmnist(DATA / "retinamnist.npz", num_classes=card.num_classes)["test"]
    return torch.cat([prepare(image, card) for image in split.images]), split.labels


def test_nearest_and_precision_have_their_exact_values():
    # Four cases on the unit circle at 0, 90, 180 and 270 degrees; the query at 10 degrees.
    library = _library(np.array([[1, 0], [0, 1], [-1, 0], [0, -1]]), np.array([0, 1, 1, 0]))
    query = np.array([[np.cos(0.1745), np.sin(0.1745)]])
    [found] = similar.nearest(library, query, k=2)
    assert [n.index for n in found] == [0, 1] and [n.label for n in found] == [0, 1]
    assert found[0] == Neighbour(0, "synthetic/0", 0, pytest.approx(np.cos(0.1745), abs=1e-6))
    assert similar.precision_at_k(library, query, np.array([0]), k=2) == 0.5
    # A random neighbour: P_query(0) * P_library(0) + P_query(1) * P_library(1) = 0.75 * 0.5 + 0.25 * 0.5.
    assert similar.label_prior_precision(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == 0.5


def test_multilabel_precision_counts_the_whole_positive_set():
    labels = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=np.uint8)
    library = _library(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.8, 0.2]]), labels, multilabel=True)
    [found] = similar.nearest(library, np.array([[1.0, 0.0]]), k=3)
    assert [n.label for n in found] == [(0,), (0, 1), (0,)]
    # Neighbours {0}, {0, 1}, {0}: two of three share the query's set {0} exactly.
    assert similar.precision_at_k(library, np.array([[1.0, 0.0]]), labels[:1], k=3) == pytest.approx(2 / 3)
    # Sets in the library: {0} 2/4, {0,1} 1/4, {} 1/4; queries {0} and {}: 0.5 * 0.5 + 0.5 * 0.25.
    query_labels = np.array([[1, 0], [0, 0]], dtype=np.uint8)
    assert similar.label_prior_precision(labels, query_labels) == pytest.approx(0.375)


@pytest.mark.parametrize("multilabel", [False, True])
def test_save_and_load_round_trip_exactly(tmp_path, multilabel):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (50, 3)).astype(np.uint8) if multilabel else rng.integers(0, 5, 50)
    library = _library(rng.standard_normal((50, 8)), labels, multilabel=multilabel)
    library.save(tmp_path / "reference.npz")
    loaded = ReferenceLibrary.load(tmp_path / "reference.npz")
    for name in ("embeddings", "labels"):
        original, read = getattr(library, name), getattr(loaded, name)
        assert read.dtype == original.dtype and np.array_equal(read, original)
    for name in ("case_ids", "splits", "thumbnails", "multilabel", "source"):
        assert getattr(loaded, name) == getattr(library, name)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "embeddings": a["embeddings"][:-1]}, "4 labels for 3 embeddings"),
        (lambda a: {**a, "labels": a["labels"][:-1]}, "3 labels for 4 embeddings"),
        (lambda a: {**a, "labels": a["labels"].astype(np.float32)}, "integer"),
        (lambda a: {**a, "multilabel": np.array(True)}, "multilabel labels must be"),
        (lambda a: {**a, "embeddings": a["embeddings"] * 2}, "unit length"),
        (lambda a: {**a, "case_ids": a["case_ids"][::-1][:-1]}, "case_ids"),
        (lambda a: {**a, "thumbnail_offsets": a["thumbnail_offsets"] + 1}, "offsets"),
        (lambda a: {**a, "splits": np.array(["test"] * len(a["splits"]))}, "test split"),
        (lambda a: {k: v for k, v in a.items() if k != "source"}, "missing"),
        (lambda a: {**a, "format_version": np.array(99)}, "format version"),
    ],
)
def test_load_refuses_a_mismatched_file(tmp_path, change, message):
    path = tmp_path / "reference.npz"
    _library(np.eye(4), np.arange(4)).save(path)
    np.savez(path, **change(_arrays(path)))
    with pytest.raises(ValueError, match=message):
        ReferenceLibrary.load(path)


def test_load_refuses_a_corrupted_or_truncated_file(tmp_path):
    path = tmp_path / "reference.npz"
    _library(np.random.default_rng(0).standard_normal((300, 16)), np.zeros(300, np.int64)).save(path)
    data = bytearray(path.read_bytes())
    path.with_name("truncated.npz").write_bytes(data[: len(data) // 2])
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path.with_name("corrupted.npz").write_bytes(bytes(data))
    for name in ("truncated.npz", "corrupted.npz", "absent.npz"):
        with pytest.raises(ValueError, match="not a valid reference library"):
            ReferenceLibrary.load(tmp_path / name)


def test_approximate_search_agrees_with_exact_search():
    # Unstructured Gaussian vectors: no clusters to make the graph's job easy.
    rng = np.random.default_rng(2024)
    library = _library(rng.standard_normal((30_000, 64)), np.zeros(30_000, np.int64))
    queries = rng.standard_normal((500, 64))
    exact, exact_similarities = similar.search(library, queries, 5, approximate=False)
    approximate, approximate_similarities = similar.search(library, queries, 5, approximate=True)
    recall = np.mean([len(set(e) & set(a)) / 5 for e, a in zip(exact, approximate, strict=True)])
    assert recall >= 0.95
    # Both give the cosine similarity of the rows they name, most similar first.
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    for indices, similarities in ((exact, exact_similarities), (approximate, approximate_similarities)):
        cosines = np.einsum("bd,bkd->bk", unit_queries, library.embeddings[indices])
        assert np.allclose(similarities, cosines, atol=1e-5)
        assert np.all(np.diff(similarities, axis=1) <= 1e-6)


def test_the_library_size_chooses_the_search(monkeypatch):
    library = _library(np.random.default_rng(0).standard_normal((200, 8)), np.zeros(200, np.int64))
    similar.nearest(library, library.embeddings[:3])
    assert "_approximate_index" not in vars(library)  # small: exact, faiss not even built
    monkeypatch.setattr(similar, "EXACT_LIMIT", 100)
    [found, *_] = similar.nearest(library, library.embeddings[:3])
    assert "_approximate_index" in vars(library) and found[0].index == 0


def test_embed_is_the_unit_length_embedding_of_models_ood(retina_test):
    model = load_model(load_card(RETINA))
    x = retina_test[0][:8]
    z = similar.embed(model, x)
    reference = ood.embed(model, x)[0].numpy()
    assert z.shape == reference.shape and z.dtype == np.float32
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-6)
    assert np.allclose(z, reference / np.linalg.norm(reference, axis=1, keepdims=True), atol=1e-6)


def test_shipped_retinamnist_library_beats_the_label_prior_on_test(retina_test):
    card = load_card(RETINA)
    model = load_model(card)
    library = ReferenceLibrary.load(RETINA / similar.REFERENCE_FILE)
    x, grades = retina_test
    queries = similar.embed(model, x)
    precision = similar.precision_at_k(library, queries, grades, k=5)
    prior = similar.label_prior_precision(library.labels, grades)
    assert precision > prior
    recorded = json.loads((RETINA / "evaluation.json").read_text())["similar_cases"]
    assert recorded["precision_at_k"] == pytest.approx(precision, abs=1e-6)
    assert recorded["label_prior"] == pytest.approx(prior, abs=1e-6)
    assert recorded["n_queries"] == len(grades) == 400 and recorded["library"]["n"] == len(library)


def test_worker_calls_on_a_prepared_batch_give_k_neighbours_each():
    card = load_card(NIH)
    model = load_model(card)
    library = ReferenceLibrary.load(NIH / similar.REFERENCE_FILE)
    with np.load(DATA / "nih_cxr14_test.npz", allow_pickle=False) as sample:
        images = sample["images"][:4]
    x = torch.cat([prepare(image.astype(np.float32), card) for image in images])
    found = similar.nearest(library, similar.embed(model, x), k=5)
    assert library.multilabel and len(found) == 4 and all(len(row) == 5 for row in found)
    for row in found:
        assert [n.similarity for n in row] == sorted((n.similarity for n in row), reverse=True)
        for n in row:
            assert n.case_id == library.case_ids[n.index] and -1.0 <= n.similarity <= 1.0 + 1e-6
            assert isinstance(n.label, tuple) and all(0 <= i < card.num_classes for i in n.label)


def test_shipped_libraries_hold_no_test_case():
    retina = ReferenceLibrary.load(RETINA / similar.REFERENCE_FILE)
    splits = load_medmnist(DATA / "retinamnist.npz", num_classes=5)
    assert set(retina.splits) == {"train", "val"} and len(retina) == len(splits["train"]) + len(splits["val"])
    for case_id, split, thumbnail in zip(retina.case_ids, retina.splits, retina.thumbnails, strict=True):
        source, name, index = case_id.split("/")
        assert (source, name) == ("retinamnist", split)
        # The thumbnail is that case's image (6 bits a channel: at most 2 levels off).
        pixels = np.asarray(Image.open(io.BytesIO(thumbnail)).convert("RGB")).astype(int)
        assert np.abs(pixels - splits[split].images[int(index)]).max() <= 2

    nih = ReferenceLibrary.load(NIH / similar.REFERENCE_FILE)
    with np.load(DATA / "nih_cxr14_test.npz", allow_pickle=False) as sample:
        test_ids = {f"nih/{name}" for name in sample["files"]}
    assert set(nih.splits) == {"train", "val"} and not test_ids & set(nih.case_ids)
    assert all(max(Image.open(io.BytesIO(t)).size) <= 96 for t in nih.thumbnails)


@pytest.mark.parametrize("folder", [RETINA, NIH])
def test_shipped_libraries_are_small(folder):
    assert (folder / similar.REFERENCE_FILE).stat().st_size < MAX_FILE_BYTES
