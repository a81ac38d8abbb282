"""The written justification: every clause follows a stored number, and changes when that number changes."""

from __future__ import annotations

from app.reading.justification import compose, concept_headline

CONCEPTS = [
    {"concept": "haemorrhages", "sensitivity": 0.41, "strength": "strong", "accuracy": 0.8},
    {"concept": "hard exudates", "sensitivity": 0.05, "strength": "weak", "accuracy": 0.9},
    {"concept": "optic disc", "sensitivity": -0.2, "strength": "none", "accuracy": 0.95},
]


def _similar(labels: list[str]) -> list[dict]:
    return [{"rank": i + 1, "labels": [label], "similarity": 0.9 - i / 100} for i, label in enumerate(labels)]


def _compose(**changes):
    inputs = dict(
        label="moderate", probability=0.62, multilabel=False, entropy=0.81, threshold=1.48, referral=False,
        concepts=CONCEPTS, similar_cases=_similar(["moderate"] * 4 + ["mild"]),
    )
    return compose(**(inputs | changes))


def test_sentences_name_the_stored_numbers():
    result = _compose()
    assert result.sentences == [
        "The model grades this image moderate (calibrated probability 62%), with uncertainty below the referral "
        "threshold (entropy 0.81 < 1.48).",
        "Its evidence resembles haemorrhages (strong) and hard exudates (weak); 4 of the 5 most similar confirmed "
        "cases were graded moderate.",
    ]
    assert result.inputs["similar_cases"]["agreeing"] == 4
    assert result.inputs["probability"] == 0.62


def test_each_input_changes_its_clause():
    base = _compose().sentences
    assert _compose(label="severe NPDR").sentences[0] != base[0]
    assert "62%" not in _compose(probability=0.4).sentences[0]
    referred = _compose(entropy=1.6, referral=True).sentences[0]
    assert "above the referral threshold (entropy 1.60 ≥ 1.48)" in referred and "second reading" in referred
    swapped = [CONCEPTS[1] | {"strength": "strong"}, CONCEPTS[0] | {"strength": "moderate"}, CONCEPTS[2]]
    assert "hard exudates (strong) and haemorrhages (moderate)" in _compose(concepts=swapped).sentences[1]
    none_stand_out = [item | {"strength": "none"} for item in CONCEPTS]
    assert _compose(concepts=none_stand_out).sentences[1].startswith("No learnt concept stands out in its evidence;")
    assert "none of the 5 most similar" in _compose(similar_cases=_similar(["mild"] * 5)).sentences[1]
    assert "all 5 of the most similar" in _compose(similar_cases=_similar(["moderate"] * 5)).sentences[1]


def test_absent_explanations_are_not_mentioned():
    result = _compose(concepts=None, similar_cases=None)
    assert len(result.sentences) == 1
    assert "concepts" not in result.inputs and "similar_cases" not in result.inputs
    only_similar = _compose(concepts=None).sentences[1]
    assert only_similar.startswith("4 of the 5") and "resembles" not in only_similar


def test_multilabel_and_missing_threshold():
    result = _compose(label="effusion", multilabel=True, probability=None, threshold=None,
                      similar_cases=_similar(["effusion", "emphysema", "effusion"]))
    assert result.sentences[0] == "The model's strongest finding is effusion."
    assert "2 of the 3 most similar confirmed cases have effusion" in result.sentences[1]


def test_headline_keeps_the_two_strongest_told():
    assert concept_headline(CONCEPTS) == "haemorrhages (strong) and hard exudates (weak)"
    assert concept_headline([]) == ""


def test_an_unvalidated_concept_is_never_told():
    unvalidated = [CONCEPTS[0] | {"validated": False}, CONCEPTS[1]]
    assert concept_headline(unvalidated) == "hard exudates (weak)"
    assert "haemorrhages" not in _compose(concepts=unvalidated).sentences[1]
