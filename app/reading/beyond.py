"""Explanations beyond heatmaps as the assistance panel shows them: the similar confirmed cases, the concept
evidence and the written justification of one prediction, from what the worker stored with it
(workers/evidence.py) and what the model's card measured of them; and what a reader-study condition keeps."""

from __future__ import annotations

import json
from typing import Any

from app import visibility
from app.ai_models.sync import model_folder
from app.reading import justification
from app.reading.schemas import Assistance, ConceptEvidence, ConceptsShown, SimilarCase, SimilarCases
from app.tables import AiModel, Prediction


def top_probability(prediction: Prediction) -> float | None:
    """The calibrated probability of the predicted class (of a single-label model: its probabilities sum to 1)."""
    values = list(prediction.probabilities)
    if not values or abs(sum(values) - 1) > 1e-3 or not 0 <= prediction.label_index < len(values):
        return None
    return float(values[prediction.label_index])


def _card_block(prediction: Prediction, key: str) -> dict[str, Any]:
    return dict(((prediction.model.card or {}).get("evaluation") or {}).get(key) or {})


def _labels_of(prediction: Prediction, case: dict[str, Any]) -> list[str]:
    labels = list(prediction.model.labels)
    return [labels[i] if 0 <= i < len(labels) else str(i) for i in case.get("label_indices", [])]


def similar_cases(prediction: Prediction) -> SimilarCases | None:
    """The prediction's nearest reference cases; None where the model has no reference library."""
    stored = prediction.similar_cases
    if not stored:
        return None
    measured = _card_block(prediction, "similar_cases")
    cases = [
        SimilarCase(
            rank=int(case["rank"]),
            case_id=str(case["case_id"]),
            labels=_labels_of(prediction, case),
            similarity=float(case["similarity"]),
            agrees=prediction.label_index in case.get("label_indices", []),
            thumbnail_url=f"/api/predictions/{prediction.id}/similar/{int(case['rank'])}.png",
        )
        for case in stored
    ]
    library = measured.get("library") or {}
    words = f"{library['n']:,} confirmed cases" if isinstance(library.get("n"), int) else "confirmed cases"
    if library.get("source"):
        words += f" of {library['source']}"
    return SimilarCases(
        cases=cases,
        agreeing=sum(case.agrees for case in cases),
        library=words,
        precision=measured.get("precision_at_k"),
        prior=measured.get("label_prior"),
    )


def concepts(prediction: Prediction) -> ConceptsShown | None:
    """The prediction's concept evidence, strongest first; None where the model has no concept bank."""
    stored = prediction.concepts
    if stored is None:
        return None
    return ConceptsShown(
        items=[ConceptEvidence.model_validate(item) for item in stored],
        headline=justification.concept_headline(stored),
        page_url=f"/models/{prediction.model_id}/concepts",
    )


def justification_of(prediction: Prediction, *, top_probability: float | None) -> list[str]:
    """The written justification of the prediction (app/reading/justification.py)."""
    return justification.compose(
        label=prediction.label,
        probability=top_probability,
        multilabel=prediction.model.task == "multilabel",
        entropy=prediction.predictive_entropy,
        threshold=prediction.model.uncertainty_threshold,
        referral=prediction.referral,
        concepts=prediction.concepts,
        similar_cases=[{**case, "labels": _labels_of(prediction, case)} for case in prediction.similar_cases or []],
    ).sentences


def restrict(assistance: Assistance, allowance: visibility.Allowance) -> dict[str, Any]:
    """The fields of the assistance beyond heatmaps that the condition hides, set to None (a model_copy update)."""
    return {
        "similar_cases": assistance.similar_cases if allowance.similar_cases else None,
        "concepts": assistance.concepts if allowance.concepts else None,
        "justification": assistance.justification if allowance.justification else None,
    }


# The model's concept page -------------------------------------------------------------------------------------

CONCEPT_FILE = "concepts.json"


def _words(name: str) -> str:
    return name.replace("_", " ")


def concept_page(model: AiModel) -> dict[str, Any] | None:
    """What the model's concept bank measured, for its global page: per concept the held-out accuracy of its
    vector (binomial test against chance), per class the TCAV score against random concepts (t-test, Bonferroni),
    and the regression concept vectors; None where this server holds no concept bank of the model."""
    folder = model_folder(model.name, model.version)
    path = folder / CONCEPT_FILE if folder is not None else None
    if path is None or not path.is_file():
        return None
    bank = json.loads(path.read_text(encoding="utf-8"))
    classes = list(bank["classes"])
    concepts = []
    for name in bank["concepts"]:
        accuracy = bank["accuracy"][name]
        per_class = [
            {"class": cls, **{key: bank["tcav"][name][cls].get(key) for key in
                              ("score_mean", "score_std", "random_mean", "p_corrected", "significant")}}
            for cls in classes
        ]
        concepts.append({"name": _words(name), "accuracy": accuracy.get("accuracy"), "n": accuracy.get("n"),
                         "p_value": accuracy.get("p_value"), "tcav": per_class})
    return {
        "model": model,
        "layer": bank["layer"],
        "classes": classes,
        "concepts": concepts,
        "rcvs": bank.get("rcvs", []),
        "info": bank.get("info", {}),
    }
