"""The explanation benchmark on a tiny model folder with a fake sample source (with lesion masks)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from app import cli
from models.card import ModelCard
from models.explain import evaluate


def _samples(card: ModelCard, limit: int) -> evaluate.Samples:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(limit, 3, 16, 16, generator=generator)
    masks = torch.zeros(limit, 1, 16, 16, dtype=torch.bool)
    masks[:, :, 4:10, 4:10] = True
    return evaluate.Samples(x=x, labels=torch.zeros(limit, dtype=torch.long), masks=masks)


@pytest.fixture
def tiny_zoo(make_model_folder: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = make_model_folder()
    monkeypatch.setitem(evaluate.SAMPLE_SOURCES, "tiny", _samples)
    return folder.parent


def test_report_ranks_methods_and_reports_localisation(tiny_zoo: Path, tmp_path: Path) -> None:
    methods = ["deeplift", "lrp_epsilon", "no_such_method"]
    report = evaluate.evaluate_explanations("tiny", out_dir=tmp_path / "out", methods=methods, limit=2, zoo=tiny_zoo)
    assert sorted(report["ranking"]) == ["deeplift", "lrp_epsilon"]
    assert "no_such_method" in report["failed"]
    row = report["methods"]["deeplift"]
    assert row["completeness_rel"] < 1e-3 and 0.0 <= row["relevance_mass"] <= 1.0
    assert len(row["curves"]["deletion"]) == 17
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["ranking"] == report["ranking"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page


def test_cli_evaluate_explanations(
    tiny_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(evaluate, "ZOO", tiny_zoo)
    monkeypatch.setattr(
        evaluate.evaluate_explanations,
        "__kwdefaults__",
        {**evaluate.evaluate_explanations.__kwdefaults__, "zoo": tiny_zoo},
    )
    code = cli.main(["evaluate-explanations", "tiny", "--out", str(tmp_path), "--methods", "deeplift", "--limit", "1"])
    assert code == 0 and "deeplift" in capsys.readouterr().out
    assert cli.main(["evaluate-explanations", "unknown-model", "--out", str(tmp_path)]) == 2


def test_unknown_sample_source_is_an_error(tiny_zoo: Path) -> None:
    card = evaluate.find_card("tiny", tiny_zoo)
    with pytest.raises(ValueError, match="no evaluation samples"):
        evaluate.sample_source(card.__class__(**{**card.__dict__, "name": "other"}))


def test_idrid_heldout_samples_carry_exudate_masks_through_the_crop() -> None:
    from models.explain.evaluate import find_card, idrid_heldout_exudates

    card = find_card("fundus-lesions-idrid")
    samples = idrid_heldout_exudates(card, 2)
    assert samples.x.shape == (2, 3, *card.input.size)
    assert samples.masks is not None and samples.masks.shape == (2, 1, *card.input.size)
    assert samples.labels.tolist() == [card.labels.index("hard exudates")] * 2
    # Exudates are small: present on every held-out image, far from covering it.
    coverage = samples.masks.float().mean(dim=(1, 2, 3))
    assert torch.all(coverage > 0) and torch.all(coverage < 0.2)
    # The lesions lie on the fundus, which is bright in the input; the padding (black) has none.
    brightness = samples.x.mean(dim=1, keepdim=True)
    assert brightness[samples.masks].mean() > brightness[~samples.masks].mean()


def test_skipped_metrics_are_absent_and_the_others_present(tiny_zoo: Path, tmp_path: Path) -> None:
    skip = ["randomisation", "repeatability", "sensitivity_n"]
    report = evaluate.evaluate_explanations(
        "tiny", out_dir=tmp_path, methods=["deeplift", "lime"], limit=2, zoo=tiny_zoo, skip=skip
    )
    assert report["skipped_metrics"] == ["sensitivity_n", "randomisation", "repeatability"]
    skipped_keys = {key for metric in skip for key in evaluate.METRICS[metric]}
    # Replica distances need replica folders (another test): without them that metric has nothing to fill.
    kept_keys = {key for metric, keys in evaluate.METRICS.items() if metric not in [*skip, "replicas"] for key in keys}
    for row in report["methods"].values():
        assert not skipped_keys & row.keys()
        assert kept_keys | {"seconds_per_image", "mean_rank"} <= row.keys()
    # Without skip, lime (stochastic) gets its repeatability: the skip above is what removed it.
    full = evaluate.evaluate_explanations("tiny", out_dir=tmp_path, methods=["lime"], limit=1, zoo=tiny_zoo)
    assert skipped_keys <= full["methods"]["lime"].keys()


def test_skipping_every_ranking_metric_keeps_run_order_and_drops_the_curves(tiny_zoo: Path, tmp_path: Path) -> None:
    skip = ["deletion", "insertion", "sensitivity_n", "randomisation"]
    report = evaluate.evaluate_explanations(
        "tiny", out_dir=tmp_path, methods=["lrp_epsilon", "deeplift"], limit=1, zoo=tiny_zoo, skip=skip
    )
    assert report["ranking"] == ["lrp_epsilon", "deeplift"]
    assert all("mean_rank" not in row and row["curves"] == {} for row in report["methods"].values())
    page = (tmp_path / "report.html").read_text()
    assert "<table>" in page and "data:image/png" not in page and "deletion, insertion" in page


def test_unknown_metric_is_an_error(tiny_zoo: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate.evaluate_explanations(
            "tiny", out_dir=tmp_path, methods=["deeplift"], limit=1, zoo=tiny_zoo, skip=["localization"]
        )


def test_settings_override_the_card_and_a_misspelt_one_is_an_error(tiny_zoo: Path, tmp_path: Path) -> None:
    card = evaluate.find_card("tiny", tiny_zoo)
    model = torch.nn.Linear(1, 1)
    explainer = evaluate.make_explainer("shapley_sampling", model, card, {"shapley_sampling": {"n_permutations": 3}})
    assert explainer.n_permutations == 3  # type: ignore[attr-defined]
    assert evaluate.make_explainer("shapley_sampling", model, card).n_permutations == 25  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="no setting 'n_permutation'"):
        evaluate.make_explainer("shapley_sampling", model, card, {"shapley_sampling": {"n_permutation": 3}})
    # The setting reaches the method: a 16 px input in 8 px windows at stride 8 gives four constant blocks.
    network = evaluate.load_model(card)
    occlusion = evaluate.make_explainer("occlusion", network, card, {"occlusion": {"window": 8, "stride": 8}})
    maps = occlusion.explain(torch.randn(1, 3, 16, 16), torch.zeros(1, dtype=torch.long))
    assert maps[0, 0, :8, :8].unique().numel() == 1 and maps.unique().numel() <= 4


def test_cli_skip_and_set(
    tiny_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        evaluate.evaluate_explanations,
        "__kwdefaults__",
        {**evaluate.evaluate_explanations.__kwdefaults__, "zoo": tiny_zoo},
    )
    code = cli.main(
        [
            "evaluate-explanations",
            "tiny",
            "--out",
            str(tmp_path),
            "--methods",
            "occlusion",
            "--limit",
            "1",
            "--skip",
            "randomisation",
            "sensitivity_n",
            "--set",
            "occlusion.window=8",
            "occlusion.stride=8",
        ]
    )
    assert code == 0 and "relevance mass" in capsys.readouterr().out
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["settings"] == {"occlusion": {"window": 8, "stride": 8}}
    assert saved["skipped_metrics"] == ["sensitivity_n", "randomisation"]
    assert cli.main(["evaluate-explanations", "tiny", "--out", str(tmp_path), "--set", "occlusion.window"]) == 2
    assert cli.main(["evaluate-explanations", "tiny", "--out", str(tmp_path), "--skip", "nothing"]) == 2


def _replica(tiny_zoo: Path, where: Path, *, nudge: float, **card_changes: object) -> Path:
    """A copy of the tiny model folder outside the zoo, its weights nudged, its card's sha256 renewed."""
    import hashlib
    import shutil

    folder = shutil.copytree(tiny_zoo / "tiny", where)
    weights = torch.load(folder / "weights.pt")
    generator = torch.Generator().manual_seed(3)
    for key, value in weights.items():
        if value.is_floating_point() and "running" not in key:  # batch-norm variances must stay positive
            weights[key] = value + nudge * torch.randn(value.shape, generator=generator)
    torch.save(weights, folder / "weights.pt")
    card = json.loads((folder / "card.json").read_text())
    card.update(card_changes, weights_sha256=hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest())
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_replicas_add_repeatability_across_models(tiny_zoo: Path, tmp_path: Path) -> None:
    same = _replica(tiny_zoo, tmp_path / "replicas" / "same", nudge=0.0)
    other = _replica(tiny_zoo, tmp_path / "replicas" / "other", nudge=0.5)
    alike = evaluate.evaluate_explanations(
        "tiny",
        out_dir=tmp_path / "a",
        methods=["gradient"],
        limit=2,
        zoo=tiny_zoo,
        replicas=[same],
        skip=["randomisation", "sensitivity_n"],
    )
    apart = evaluate.evaluate_explanations(
        "tiny",
        out_dir=tmp_path / "b",
        methods=["gradient"],
        limit=2,
        zoo=tiny_zoo,
        replicas=[same, other],
        skip=["randomisation"],
    )
    assert alike["methods"]["gradient"]["replica_l2_per_image"] == pytest.approx(0.0, abs=1e-6)
    assert apart["methods"]["gradient"]["replica_l2_per_image"] > 0.01
    assert apart["methods"]["gradient"]["replica_l2_average_map"] > 0.0
    assert apart["replicas"] == [str(same), str(other)]
    assert "replica_l2_average_map" in (tmp_path / "b" / "report.html").read_text()
    without = evaluate.evaluate_explanations(
        "tiny", out_dir=tmp_path / "c", methods=["gradient"], limit=2, zoo=tiny_zoo, skip=["randomisation"]
    )
    assert "replica_l2_per_image" not in without["methods"]["gradient"]


def test_a_replica_of_another_model_is_refused(tiny_zoo: Path, tmp_path: Path) -> None:
    stranger = _replica(tiny_zoo, tmp_path / "replicas" / "stranger", nudge=0.1, labels=["x", "y", "z", "w"])
    with pytest.raises(ValueError, match="not a replica"):
        evaluate.evaluate_explanations(
            "tiny", out_dir=tmp_path / "a", methods=["gradient"], limit=1, zoo=tiny_zoo, replicas=[stranger]
        )
    with pytest.raises(ValueError, match="replica"):
        evaluate.evaluate_explanations(
            "tiny", out_dir=tmp_path / "a", methods=["gradient"], limit=1, zoo=tiny_zoo, replicas=[tmp_path / "nowhere"]
        )
