"""`lumen fit-ood`: fits a copy of the shipped DR model's gate, foreign images decoded by the product's loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from app import cli
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]


def test_fit_ood_writes_the_gate_and_the_cards_blocks(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "dr"
    shutil.copytree(ROOT / "models" / "zoo" / "dr-grading-retinamnist", folder)
    weights = (folder / "weights.pt").read_bytes()
    radiographs = tmp_path / "radiographs"
    radiographs.mkdir()
    for name in ("00000001_000.png", "00027426_000.png"):
        shutil.copy(ROOT / "data" / "cxr" / name, radiographs / name)
    (radiographs / "notes.txt").write_text("not an image: left out by its suffix")
    code = cli.main([
        "fit-ood", str(folder), "--foreign", f"chest={radiographs}", f"mr={FIXTURES / 'dicom' / 'MR2_J2KI.dcm'}",
        f"mr={FIXTURES / 'dicom' / 'emri_small.dcm'}",
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    card = json.loads((folder / "card.json").read_text())
    gate = card["ood"]
    assert gate["method"] == "mahalanobis" and (folder / gate["file"]).is_file()
    # Only this run's foreign sets: the card's block was written anew (the shipped one names other sets).
    assert {name: result["n"] for name, result in gate["foreign"].items()} == {"chest": 2, "mr": 2}
    assert gate["foreign"]["chest"]["rejected"] == 1.0
    assert gate["false_rejection"]["val"]["n"] == 120 and gate["false_rejection"]["test"]["n"] == 400
    assert card["domain"]["body_part"] == "eye fundus"
    assert (folder / "weights.pt").read_bytes() == weights  # the weights are never touched
    assert "dr-grading-retinamnist 1.0.0: mahalanobis gate" in out


def test_fit_ood_refuses_a_bad_foreign_argument(tmp_path: Path, capsys) -> None:
    code = cli.main(["fit-ood", str(ROOT / "models" / "zoo" / "cxr-demo"), "--foreign", f"{tmp_path}/missing"])
    assert code == 2
    assert "--foreign expects NAME=PATH" in capsys.readouterr().err
