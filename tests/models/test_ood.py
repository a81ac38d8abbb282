"""Input-domain gates (models/ood.py): the scores' exact values, a synthetic shift on a tiny net, the save/load
round trip through the card, and each shipped model's gate on held-out in-domain and foreign images in the repo."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import ood
from models.card import CardError, load_card
from models.datasets import IDRID_HELDOUT, load_idrid, load_medmnist
from models.recipes import ood as ood_recipe
from models.registry import load_model

ROOT = Path(__file__).resolve().parents[2]
ZOO, DATA = ROOT / "models" / "zoo", ROOT / "data"


def test_energy_and_mahalanobis_scores_have_their_closed_forms():
    logits = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    expected = [-math.log(2.0), -math.log(math.exp(2.0) + math.exp(-1.0))]
    assert ood.energy_score(logits) == pytest.approx(expected)
    softplus = [-2 * math.log(2.0), -(math.log1p(math.exp(2.0)) + math.log1p(math.exp(-1.0)))]
    assert ood.energy_score(logits, multilabel=True) == pytest.approx(softplus)
    means, precision = np.array([[0.0, 0.0], [10.0, 0.0]]), np.diag([1.0, 4.0])
    z = np.array([[1.0, 1.0], [9.0, 0.5]])
    # The nearest class mean counts: 1 + 4 for the first, 1 + 4 * 0.25 for the second.
    assert ood.mahalanobis_score(z, means, precision) == pytest.approx([5.0, 2.0])


def test_threshold_is_an_observed_quantile_that_refuses_at_most_the_target():
    scores = np.arange(1.0, 101.0)
    threshold = ood.threshold_for(scores, 0.05)
    assert threshold == 96.0 and (scores > threshold).mean() <= 0.05
    with pytest.raises(ValueError, match="must be in"):
        ood.threshold_for(scores, 0.0)


def _shifted(n: int, seed: int, *, shift: bool) -> torch.Tensor:
    """(n, 3, 16, 16) prepared inputs: smooth blobs (in-domain) or high-frequency checkerboards of another
    level and contrast (the shift)."""
    generator = torch.Generator().manual_seed(seed)
    if not shift:
        coarse = torch.randn(n, 3, 4, 4, generator=generator)
        return torch.nn.functional.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1.0
    return 2.0 + 3.0 * checker * torch.rand(n, 3, 1, 1, generator=generator)


def test_a_gate_fitted_on_a_tiny_net_separates_a_synthetic_shift(make_model_folder):
    card = load_card(make_model_folder())
    model = load_model(card)
    train, val, test = (_shifted(n, seed, shift=False) for n, seed in ((200, 1), (100, 2), (100, 3)))
    fitted = ood.fit_gate(
        model, card, list(train), list(val), test_images=list(test),
        foreign={"checkerboards": list(_shifted(50, 4, shift=True))},
    )
    report = fitted.report
    assert fitted.gate.method == "mahalanobis" and report["method"] == "mahalanobis"
    assert report["foreign"]["checkerboards"]["auroc"] > 0.99
    assert report["foreign"]["checkerboards"]["rejected"] == 1.0
    assert report["false_rejection"]["val"]["rate"] <= 0.05 and report["false_rejection"]["test"]["n"] == 100
    assert report["false_rejection"]["test"]["rate"] < 0.2
    # The other score is kept for comparison, with its own numbers, and lost on the selection AUROC.
    assert report["comparison"]["energy"]["selection_auroc"] <= report["selection_auroc"]
    # The gate's own check agrees with the report: the same test images refused, every shifted image refused.
    kept = np.mean([v.in_domain for v in fitted.gate.check(model, test)])
    assert kept == pytest.approx(1 - report["false_rejection"]["test"]["rate"])
    verdicts = fitted.gate.check(model, _shifted(3, 5, shift=True))
    assert not any(v.in_domain for v in verdicts)
    assert verdicts[0].reason().startswith("outside this model's domain: mahalanobis score")


def test_the_gate_round_trips_through_the_card_and_refuses_a_changed_file(make_model_folder):
    folder = make_model_folder()
    card = load_card(folder)
    assert card.ood is None and ood.load_gate(card) is None  # an older card: no gate, every image runs
    model = load_model(card)
    fitted = ood.fit_gate(model, card, list(_shifted(60, 1, shift=False)), list(_shifted(40, 2, shift=False)))
    written = ood_recipe.write_gate(card, fitted, fitted_on="blobs", domain=None)
    reloaded = load_card(folder)
    assert reloaded == written and reloaded.ood is not None and reloaded.ood.file == ood.GATE_FILE
    gate = ood.load_gate(reloaded)
    assert gate is not None and gate.method == fitted.gate.method and gate.threshold == fitted.gate.threshold
    np.testing.assert_array_equal(gate.precision, fitted.gate.precision)
    x = _shifted(4, 9, shift=False)
    assert [v.score for v in gate.check(model, x)] == [v.score for v in fitted.gate.check(model, x)]
    (folder / ood.GATE_FILE).write_bytes((folder / ood.GATE_FILE).read_bytes() + b"x")
    with pytest.raises(CardError, match="the gate file was changed or replaced"):
        ood.load_gate(load_card(folder))
    (folder / ood.GATE_FILE).unlink()
    with pytest.raises(CardError, match="input-domain gate file 'ood.npz' is missing"):
        load_card(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target_false_rejection": 0.0}, "ood.target_false_rejection' must be > 0"),
        ({"method": "odin"}, "ood.method' must be one of"),
        ({"file": "../ood.npz"}, "inside the model folder"),
        ({"false_rejection": {"val": {"rate": 1.5, "n": 10}}}, "must be <= 1"),
    ],
)
def test_a_bad_ood_block_is_named(make_model_folder, change, message):
    block = {
        "method": "mahalanobis", "citation": "Lee et al., NeurIPS 2018", "file": "ood.npz", "sha256": "0" * 64,
        "threshold": 1.0, "target_false_rejection": 0.05, "false_rejection": {"val": {"rate": 0.05, "n": 20}},
    }
    folder = make_model_folder(ood={**block, **change}, domain={"body_part": "eye fundus"})
    (folder / "ood.npz").write_bytes(b"")
    with pytest.raises(CardError, match=message):
        load_card(folder)


def _rejected(card_name: str, images: list) -> tuple[np.ndarray, float]:
    card = load_card(ZOO / card_name)
    gate = ood.load_gate(card)
    assert gate is not None and card.ood is not None and card.domain is not None
    embedded = ood.embedded(load_model(card), card, images)
    return gate.scores(embedded.embeddings, embedded.logits) > gate.threshold, card.ood.false_rejection["test"]["rate"]


def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32)


def test_the_dr_gate_keeps_its_test_rejection_and_refuses_a_radiograph():
    test = list(load_medmnist(DATA / "retinamnist.npz", num_classes=5)["test"].images)
    rejected, recorded = _rejected("dr-grading-retinamnist", test)
    assert rejected.mean() == pytest.approx(recorded, abs=1.5 / len(test)) and recorded < 0.1
    [refused] = _rejected("dr-grading-retinamnist", [_grey(DATA / "cxr" / "00000001_000.png")])[0]
    assert refused


@pytest.mark.skipif(not (DATA / "idrid" / "IDRiD_17.jpg").is_file(), reason="data/idrid is not in this checkout")
def test_the_idrid_gate_keeps_its_test_rejection_and_refuses_a_radiograph():
    test = [item.image for item in load_idrid(IDRID_HELDOUT)]
    rejected, recorded = _rejected("fundus-lesions-idrid", test)
    assert rejected.mean() == pytest.approx(recorded, abs=0.5 / len(test))
    [refused] = _rejected("fundus-lesions-idrid", [_grey(DATA / "cxr" / "00000001_000.png")])[0]
    assert refused


def test_the_cxr_demo_gate_keeps_its_test_rejection_and_refuses_a_fundus_photograph():
    from models.recipes import cxr

    test = [x[0].numpy() for x in cxr.test_samples().x]
    rejected, recorded = _rejected("cxr-demo", test)
    assert rejected.mean() == pytest.approx(recorded, abs=1.5 / len(test)) and recorded < 0.15
    fundus = np.asarray(Image.open(DATA / "idrid" / "IDRiD_01.jpg").convert("RGB"))
    [refused] = _rejected("cxr-demo", [fundus])[0]
    assert refused


def test_every_shipped_card_names_its_gate_and_its_foreign_sets():
    for folder in sorted(p for p in ZOO.iterdir() if (p / "card.json").is_file()):
        data = json.loads((folder / "card.json").read_text())
        card = load_card(folder)
        assert card.ood is not None, f"{folder.name} has no input-domain gate"
        assert data["ood"]["citation"] and card.ood.foreign, folder.name
        assert all(result["n"] > 0 and 0.0 <= result["auroc"] <= 1.0 for result in card.ood.foreign.values())
        assert set(card.ood.false_rejection) == {"val", "test"}
