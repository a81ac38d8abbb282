"""Card fields added for the reference models: format (TorchScript), uncertainty, windowing, evaluation;
and the checks at load: sha256, output shape against the labels, input shape."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from models.card import CardError, WeightsMismatchError, file_sha256, load_card, write_card
from models.networks import build_network
from models.registry import load_members, load_model

from .conftest import TINY_NETWORK, card_data


def test_extended_card_round_trips(make_model_folder):
    folder = make_model_folder(
        input={**card_data()["input"], "windowing": {"center": 40, "width": 400}, "invert_monochrome1": True},
        uncertainty={"method": "tta", "flips": [[], [-1], [-2, -1]]},
        evaluation={"localisation": "models.datasets:idrid_heldout"},
    )
    card = load_card(folder)
    assert card.input.windowing == {"center": 40.0, "width": 400.0} and card.input.invert_monochrome1
    assert card.uncertainty.flips == ((), (-1,), (-2, -1)) and card.uncertainty.method == "tta"
    write_card(card)
    assert load_card(folder) == card


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"format": "onnx"}, "field 'format' must be one of"),
        ({"uncertainty": {"method": "bayes"}}, "uncertainty.method' must be one of"),
        ({"uncertainty": {"method": "mc_dropout", "samples": 1}}, "must be >= 2 for mc_dropout"),
        ({"uncertainty": {"method": "ensemble", "members": ["a"]}}, "at least 2 member folders"),
        ({"uncertainty": {"method": "ensemble", "members": ["a", "../b"]}}, "inside the model folder"),
        ({"uncertainty": {"method": "ensemble", "members": ["a", "b"]}}, "member folder 'a' has no card.json"),
        ({"uncertainty": {"method": "tta", "flips": [[1]]}}, "negative spatial axes"),
        ({"input": {**card_data()["input"], "windowing": "auto"}}, "input.windowing' must be one of"),
        ({"input": {**card_data()["input"], "windowing": {"center": 1, "width": 0}}}, "input.windowing' must be"),
    ],
)
def test_bad_new_fields_are_named(make_model_folder, overrides, message):
    with pytest.raises(CardError, match=message):
        load_card(make_model_folder(**overrides))


def test_wrong_sha256_names_both_digests(make_model_folder):
    folder = make_model_folder()
    (folder / "weights.pt").write_bytes((folder / "weights.pt").read_bytes() + b"x")
    with pytest.raises(WeightsMismatchError, match="was changed or replaced"):
        load_model(load_card(folder))


def test_labels_not_matching_the_output_are_refused(make_model_folder):
    card = load_card(make_model_folder(labels=["a", "b", "c", "d"]))  # the network gives 3 logits
    with pytest.raises(CardError, match=r"output for input \(1, 3, 16, 16\) is \(1, 3\).*4 labels need \(1, 4\)"):
        load_model(card)


def test_input_the_network_cannot_take_is_refused(make_model_folder):
    card = load_card(make_model_folder(input={**card_data()["input"], "size": [4, 8, 8]}))  # 3D into a 2D net
    with pytest.raises(CardError, match=r"does not take the card's input shape \(1, 3, 4, 8, 8\)"):
        load_model(card)


def test_torchscript_folder_loads_and_matches_the_eager_model(make_model_folder):
    folder = make_model_folder()
    eager = load_model(load_card(folder))
    torch.jit.script(eager).save(str(folder / "model.ts"))
    data = card_data(
        format="torchscript", weights="model.ts", weights_sha256=file_sha256(folder / "model.ts"), architecture=...
    )
    scripted_folder = make_model_folder("scripted", **data)
    (scripted_folder / "model.ts").write_bytes((folder / "model.ts").read_bytes())
    card = load_card(scripted_folder)
    assert card.format == "torchscript" and card.architecture.name == "torchscript"
    scripted = load_model(card)
    assert isinstance(scripted, torch.jit.ScriptModule) and not scripted.training
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(scripted(x), eager(x), atol=1e-6)


def test_torchscript_file_that_is_not_torchscript(make_model_folder):
    folder = make_model_folder(format="torchscript", architecture=...)  # weights.pt is a state dict
    with pytest.raises(CardError, match="not a loadable TorchScript file"):
        load_model(load_card(folder))


def test_state_dict_card_still_needs_an_architecture(make_model_folder):
    with pytest.raises(CardError, match="missing field 'architecture'"):
        load_card(make_model_folder(architecture=...))


def test_ensemble_members_load(make_model_folder):
    outer = make_model_folder("ensemble")
    for seed, name in enumerate(["m1", "m2"]):
        member = outer / name
        member.mkdir()
        torch.manual_seed(seed + 1)
        torch.save(build_network("densenet", **TINY_NETWORK).state_dict(), member / "weights.pt")
        write_card(
            dataclasses.replace(load_card(outer), folder=member, weights_sha256=file_sha256(member / "weights.pt"))
        )
    data = json.loads((outer / "card.json").read_text())
    data["uncertainty"] = {"method": "ensemble", "members": ["m1", "m2"]}
    (outer / "card.json").write_text(json.dumps(data))
    card = load_card(outer)
    members = load_members(card)
    assert len(members) == 2 and all(not m.training for m in members)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(members[0](x), members[1](x))
