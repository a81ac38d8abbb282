"""Concept explanations (models.concepts): the shipped banks on real held-out data, the TCAV significance test on
planted and random directions, the bank files, and the evidence the worker stores."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from models.card import load_card
from models.concepts import (
    STRENGTHS,
    Cav,
    ConceptBank,
    ConceptBankError,
    concept_evidence,
    heldout_accuracy,
    load_bank,
    pooled_activations,
    tcav_score,
    tcav_significance,
)
from models.datasets import IDRID_HELDOUT, load_medmnist
from models.preprocessing import prepare
from models.recipes.concepts import Photographs, colour_target, patch_input
from models.registry import load_model

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "models" / "zoo"
DR = ZOO / "dr-grading-retinamnist"


@pytest.fixture(scope="module")
def dr() -> tuple[torch.nn.Module, ConceptBank]:
    card = load_card(DR)
    return load_model(card), ConceptBank.load(DR)


@pytest.fixture(scope="module")
def heldout_exudates(dr: tuple[torch.nn.Module, ConceptBank]) -> dict[str, np.ndarray]:
    """Fresh patches of the held-out photographs (17-24, 55), drawn with another seed than the recipe's:
    centred in hard exudates, and as many random ones per photograph; their activations and exudate areas."""
    model, bank = dr
    card = load_card(DR)
    photographs = Photographs(IDRID_HELDOUT, colour_target(card)[0], patch_input(card))
    concept, random = photographs.paired("hard_exudates", np.random.default_rng(2024))
    return {
        "concept": pooled_activations(model, bank.layer, concept.x),
        "random": pooled_activations(model, bank.layer, random.x),
        "area": np.r_[concept.exudate, random.exudate],
    }


def test_shipped_hard_exudate_cav_separates_heldout_patches(dr, heldout_exudates):
    _, bank = dr
    k = bank.concepts.index("hard_exudates")
    cav = Cav(bank.vectors[k], float(bank.thresholds[k]), bank.accuracy["hard_exudates"].train_accuracy)
    result = heldout_accuracy(cav, heldout_exudates["concept"], heldout_exudates["random"])
    assert len(heldout_exudates["concept"]) == len(heldout_exudates["random"]) >= 200
    assert result.accuracy > 0.5 and result.p_value < 0.05
    assert result.p_value == pytest.approx(
        stats.binomtest(round(result.accuracy * result.n), result.n, 0.5, alternative="greater").pvalue
    )


def test_exudate_area_rcv_explains_heldout_variance(dr, heldout_exudates):
    _, bank = dr
    (rcv,) = bank.rcvs
    predicted = rcv.predict(np.vstack([heldout_exudates["concept"], heldout_exudates["random"]]))
    area = heldout_exudates["area"]
    r2 = 1 - np.sum((area - predicted) ** 2) / np.sum((area - area.mean()) ** 2)
    assert r2 > 0 and rcv.r2_heldout > 0
    assert np.isclose(np.linalg.norm(rcv.direction), 1.0)


def test_tcav_score_is_the_fraction_of_positive_directional_derivatives():
    grads = np.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 1.0], [0.0, 3.0]])
    assert tcav_score(grads, np.array([1.0, 0.0])) == 0.5
    assert tcav_score(grads, Cav(np.array([0.0, 1.0]), 0.0, 1.0)) == 0.5
    assert tcav_score(grads, np.array([1.0, 1.0]) / np.sqrt(2)) == 0.75  # derivatives 1, -1, 3, 3 (/ sqrt 2)
    assert tcav_score(-grads, np.array([0.0, -1.0])) == 0.5


def _synthetic(seed: int, shift: float) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    dims = 16
    planted = np.zeros(dims)
    planted[3] = 1.0
    randoms = [rng.normal(size=(120, dims)) for _ in range(11)]
    concept = rng.normal(size=(120, dims)) + shift * planted
    # The class's logit rises along the planted direction in most of its inputs.
    grads = {"class": rng.normal(scale=0.5, size=(200, dims)) + planted}
    return concept, randoms, grads


def test_significance_finds_a_planted_direction_and_not_a_random_one():
    planted = tcav_significance(*_synthetic(0, shift=2.0), seed=0)["class"]
    assert planted.score_mean > 0.9 and planted.p_value < 0.05 and planted.significant
    assert planted.runs == 10 and planted.comparisons == 1
    unplanted = tcav_significance(*_synthetic(0, shift=0.0), seed=0)["class"]
    assert unplanted.p_value >= 0.05 and not unplanted.significant
    with pytest.raises(ValueError, match="random sets"):
        tcav_significance(*_synthetic(0, shift=2.0)[:1], [np.zeros((3, 16))] * 5, {"class": np.zeros((2, 16))})


def test_random_concepts_are_significant_at_about_the_nominal_rate():
    """Concepts drawn like the random sets: with independent runs the t-test keeps its level (the shared-concept
    design of Kim et al. called 54 of 100 such concepts significant at 0.05 on this data)."""
    p = [tcav_significance(*_synthetic(seed, shift=0.0), seed=seed)["class"].p_value for seed in range(20)]
    assert sum(value < 0.05 for value in p) <= 3  # binomial(20, 0.05): P(>= 4) = 0.016
    powered = [tcav_significance(*_synthetic(seed, shift=1.0), seed=seed)["class"].p_value for seed in range(5)]
    assert all(value < 0.05 for value in powered)


def test_bonferroni_multiplies_p_by_the_comparisons():
    one = tcav_significance(*_synthetic(1, shift=0.3), seed=0)["class"]
    many = tcav_significance(*_synthetic(1, shift=0.3), seed=0, comparisons=25)["class"]
    assert many.p_value == one.p_value
    assert many.p_corrected == pytest.approx(min(1.0, 25 * one.p_value))


def test_bank_round_trip_and_validation(dr, tmp_path):
    _, bank = dr
    bank.save(tmp_path)
    again = ConceptBank.load(tmp_path)
    assert again.concepts == bank.concepts and again.classes == bank.classes and again.layer == bank.layer
    assert np.allclose(again.vectors, bank.vectors, atol=1e-7) and np.array_equal(again.thresholds, bank.thresholds)
    assert again.accuracy == bank.accuracy and again.tcav == bank.tcav and again.quantiles == bank.quantiles
    assert np.array_equal(again.rcvs[0].weights, bank.rcvs[0].weights)
    assert json.loads((tmp_path / "concepts.json").read_text()) == json.loads((DR / "concepts.json").read_text())
    assert load_bank(tmp_path / "elsewhere") is None
    with np.load(tmp_path / "concepts.npz") as arrays:
        np.savez(tmp_path / "concepts.npz", **{**arrays, "vectors": 2 * arrays["vectors"]})
    with pytest.raises(ConceptBankError, match="unit vectors"):
        ConceptBank.load(tmp_path)


def test_concept_evidence_on_real_images(dr):
    model, bank = dr
    card = load_card(DR)
    images = load_medmnist(ROOT / "data" / "retinamnist.npz", num_classes=5)["test"].images[:4]
    x = torch.cat([prepare(image, card) for image in images])
    with torch.no_grad():
        targets = model(x).argmax(1)
    model.train()
    rows = concept_evidence(model, bank, x, targets)
    assert model.training and not model.get_submodule(bank.layer)._forward_hooks  # mode restored, hook released
    model.eval()
    assert len(rows) == 4
    for row, target in zip(rows, targets.tolist(), strict=True):
        assert sorted(e.concept for e in row) == sorted(bank.concepts)
        assert all(e.strength in STRENGTHS and e.target == bank.classes[target] for e in row)
        ranks = [STRENGTHS.index(e.strength) for e in row]
        assert ranks == sorted(ranks, reverse=True)
        assert all(e.strength == "none" for e in row if e.sensitivity <= 0)
        json.dumps([dataclasses.asdict(e) for e in row])
    negated = dataclasses.replace(bank, vectors=-bank.vectors)
    flipped = concept_evidence(model, negated, x, targets)
    for row, other in zip(rows, flipped, strict=True):
        by_name = {e.concept: e.sensitivity for e in other}
        assert all(np.isclose(by_name[e.concept], -e.sensitivity, rtol=1e-5, atol=1e-9) for e in row)
        assert any(e.sensitivity != 0 for e in row)


def _served_input(folder: Path) -> torch.Tensor:
    card = load_card(folder)
    if card.input.colour == "rgb":
        return prepare(np.asarray(Image.open(ROOT / "data" / "idrid" / "IDRiD_17.jpg").convert("RGB")), card)
    return prepare(np.asarray(Image.open(ROOT / "data" / "cxr" / "00000001_000.png").convert("L")), card)


@pytest.mark.parametrize("folder", sorted(p for p in ZOO.iterdir() if (p / "concepts.json").is_file()), ids=str)
def test_every_shipped_bank_explains_its_model(folder):
    bank = ConceptBank.load(folder)
    card = load_card(folder)
    assert bank.model == card.name and bank.classes == card.labels
    evaluation = json.loads((folder / "evaluation.json").read_text())
    assert set(evaluation["concepts"]["heldout_accuracy"]) == set(bank.concepts)
    (row,) = concept_evidence(load_model(card), bank, _served_input(folder), [0])
    assert len(row) == len(bank.concepts) and all(e.strength in STRENGTHS for e in row)
