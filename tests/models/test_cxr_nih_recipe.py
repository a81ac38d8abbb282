"""The cxr-nih14 recipe and its shipped model: multilabel metrics with bootstrap intervals, a training run on a
few real radiographs, and a minimum-quality floor through the served pipeline on the shipped test sample
(data/nih_cxr14_test.npz: the 137 test radiographs at the model's input size). Nothing here reads the shared
data folder beside the checkout."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from models import evaluation
from models.card import load_card
from models.recipes import cxr_nih
from models.registry import load_model
from models.training import run_recipe

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "models" / "zoo" / "cxr-nih14"
SAMPLE = ROOT / "data" / "nih_cxr14_test.npz"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"{SAMPLE} is not in this checkout")
# Above chance by this much on 137 patients (the macro AUROC's 95% interval is about +-0.06 wide).
FLOOR_MARGIN = 0.05
# The shipped sample is the card's test split downscaled: its macro AUROC may differ from the card's (measured
# on the 512-px radiographs) by resampling alone, well inside the bootstrap interval.
NOISE = 0.03


def _sample() -> dict[str, np.ndarray]:
    with np.load(SAMPLE, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def test_mann_whitney_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((5, 60)), 1)  # many ties
    positive = rng.random((5, 60)) < 0.3
    expected = [roc_auc_score(p, s) for s, p in zip(scores, positive, strict=True)]
    assert np.allclose(evaluation.mann_whitney_auc(scores, positive), expected)
    assert np.isnan(evaluation.mann_whitney_auc(scores[:1], np.zeros((1, 60), bool)))[0]


def test_bootstrap_interval_brackets_the_auc_is_seeded_and_narrows_with_n():
    rng = np.random.default_rng(1)
    positive = rng.random(400) < 0.2
    scores = rng.normal(size=400) + positive
    small = evaluation.bootstrap_auc(scores[:100], positive[:100], seed=3)
    large = evaluation.bootstrap_auc(scores, positive, seed=3)
    assert small == evaluation.bootstrap_auc(scores[:100], positive[:100], seed=3)
    assert small != evaluation.bootstrap_auc(scores[:100], positive[:100], seed=4)
    for report in (small, large):
        assert report["low"] < report["auc"] < report["high"]
    assert large["high"] - large["low"] < small["high"] - small["low"]
    assert evaluation.bootstrap_auc(scores, np.zeros(400, bool))["auc"] is None


def test_binary_calibration_of_presence_probabilities():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 1]])
    assert evaluation.binary_calibration(labels.astype(float), labels) == {"brier": 0.0, "ece": 0.0}
    constant = evaluation.binary_calibration(np.full((4, 2), 0.5), labels)
    assert constant["brier"] == 0.25 and constant["ece"] == pytest.approx(abs(3 / 8 - 0.5))


def test_keeping_findings_keeps_their_logits():
    model = cxr_nih.build_network(cxr_nih.ARCH, **cxr_nih.NETWORK).eval()
    x = torch.rand(2, 1, 64, 64)
    smaller = cxr_nih.keep_findings(model, [1, 2])
    with torch.no_grad():
        assert torch.allclose(smaller(x), model(x)[:, [1, 2]], atol=1e-6)


def _small_dataset(folder: Path) -> None:
    """A nih-cxr14-621 layout from 30 shipped test radiographs: 14 train, 8 val, 8 test."""
    sample = _sample()
    (folder / "images").mkdir(parents=True)
    findings = list(cxr_nih.FINDINGS)
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "split", *findings])
        for i in range(30):
            name = f"images/{sample['files'][i]}"
            Image.fromarray(sample["images"][i]).save(folder / name)
            split = "train" if i < 14 else "val" if i < 22 else "test"
            writer.writerow([name, split, *sample["labels"][i].tolist()])


@needs_sample
def test_recipe_trains_a_loadable_multilabel_model_on_a_few_radiographs(tmp_path):
    _small_dataset(tmp_path / "data")
    report = run_recipe("cxr-nih14", out_dir=tmp_path / "model", data=tmp_path / "data", seed=0, epochs=1, limit=14)
    assert "trained cxr-nih14" in report and "macro AUROC" in report
    card = load_card(tmp_path / "model")
    assert card.task == "multilabel" and card.modalities == ["CR", "DX"] and card.serve_automatically
    assert set(card.labels) <= {cxr_nih.display_name(f) for f in cxr_nih.FINDINGS} and len(card.labels) >= 2
    assert card.architecture.params["num_classes"] == len(card.labels) and card.uncertainty.method == "mc_dropout"
    assert set(card.metrics["per_finding"]) == set(card.labels) and card.uncertainty_threshold is not None
    assert "not for clinical use" in card.summary
    probs = cxr_nih.served_probabilities(load_model(card), card, [_sample()["images"][0].astype(np.float32)])
    assert probs.shape == (1, len(card.labels)) and ((probs > 0) & (probs < 1)).all()


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(cxr_nih.TrainingDataError, match="labels.csv: no such file"):
        run_recipe("cxr-nih14", out_dir=tmp_path / "model", data=tmp_path, seed=0)
    assert not (tmp_path / "model").exists()


def test_shipped_card_describes_the_model_and_its_weights_verify():
    card = load_card(FOLDER)
    card.verify_weights()
    assert card.task == "multilabel" and card.modalities == ["CR", "DX"] and card.serve_automatically
    assert card.input.windowing == "percentile" and card.input.invert_monochrome1 and card.input.colour == "grayscale"
    selection = card.metrics["findings_selection"]
    assert len(card.labels) + len(selection["dropped"]) == len(cxr_nih.FINDINGS)
    weak = selection["kept_although_near_chance_on_val"]
    assert len(weak) < len(card.labels)  # at most the fill-up to the 2 labels a card needs
    for label in card.labels:  # every served finding cleared chance on val or is named as not, and on the card
        finding = next(f for f in cxr_nih.FINDINGS if cxr_nih.display_name(f) == label)
        assert (selection["val_auc"][finding]["low"] > 0.5) != (finding in weak)
        test = card.metrics["per_finding"][label]
        assert test["low"] <= test["auc"] <= test["high"]
        assert f"{label} AUROC {test['auc']:.2f}" in card.summary
        caveats = re.search(rf"{label} AUROC [^(]*\(([^)]*)\)", card.summary)
        assert caveats is not None and ("near chance on validation" in caveats.group(1)) == (finding in weak)
    assert "358" in card.summary and "not for clinical use" in card.summary
    assert card.weights_path.stat().st_size < 2 * 1024 * 1024
    assert not load_model(card).training


@needs_sample
def test_shipped_model_clears_the_quality_floor_through_the_served_pipeline():
    """Served pipeline (prepare + MC dropout as the card says) on the shipped test sample: the macro AUROC is
    above chance (what a constant, majority-class score gets) by a margin, equals the card's record of this
    sample, and is within noise of the card's test number."""
    card = load_card(FOLDER)
    sample = _sample()
    columns = [list(sample["findings"]).index(label) for label in card.labels]
    labels = sample["labels"][:, columns]
    images = [image.astype(np.float32) for image in sample["images"]]
    probs = cxr_nih.served_probabilities(load_model(card), card, images)
    macro = float(np.mean([evaluation.binary_auc(probs[:, k], labels[:, k] > 0) for k in range(len(columns))]))
    assert len(sample["images"]) == card.metrics["n"] == 137
    assert round(macro, 3) == round(card.metrics["shipped_sample"]["auc_macro"], 3)
    assert macro > 0.5 + FLOOR_MARGIN
    assert abs(macro - card.metrics["auc_macro"]["auc"]) <= NOISE
    assert not np.allclose(probs.sum(1), 1.0)  # one sigmoid per finding, not a softmax


@needs_sample
def test_boxed_test_images_carry_their_box_on_the_input_grid(tmp_path):
    """The localisation source of `lumen evaluate-explanations`: every NIH box whose finding the card names,
    on the card's input grid; none of the 12 boxes shows a finding the shipped model serves."""
    sample = _sample()
    every_finding = cxr_nih.unit_card(tmp_path)  # the network before findings are dropped names all 14
    samples = cxr_nih.boxed_test_images(every_finding, 12)
    assert samples.x.shape == (12, 1, cxr_nih.SIZE, cxr_nih.SIZE) and samples.masks is not None
    for row, finding in enumerate(sample["box_finding"]):
        assert every_finding.labels[int(samples.labels[row])] == finding
        x, y, w, h = sample["boxes"][row]
        area = int(samples.masks[row].sum())
        assert w * h <= area <= (w + 2) * (h + 2)
    shipped = load_card(FOLDER)
    if not set(shipped.labels) & {str(f) for f in sample["box_finding"]}:
        with pytest.raises(ValueError, match="no boxed test image"):
            cxr_nih.boxed_test_images(shipped, 12)
