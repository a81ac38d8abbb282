"""A prediction's written justification: one or two sentences composed by rules from stored numbers only.

No language model: each clause is chosen by a rule from the prediction (its label and calibrated probability),
its uncertainty against the model's referral threshold, its concept evidence (models/concepts.py, strengths
measured against the training images' sensitivities) and its similar confirmed cases (models/similar.py). The
numbers each sentence rests on are returned beside it (`Justification.inputs`), and a read's AI snapshot keeps
the sentences the reader saw, so any word can be traced back to a stored number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Concept strengths that count as evidence in words; "none" (below the training images' lower quartile) does not.
_TOLD_STRENGTHS = ("strong", "moderate", "weak")
_MAX_CONCEPTS_TOLD = 2


@dataclass(frozen=True)
class Justification:
    """The sentences, and every number they were composed from (by name)."""

    sentences: list[str]
    inputs: dict[str, Any] = field(default_factory=dict)


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def _and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _prediction_clause(*, label: str, probability: float | None, multilabel: bool) -> str:
    clause = f"The model's strongest finding is {label}" if multilabel else f"The model grades this image {label}"
    if probability is not None:
        clause += f" (calibrated probability {_percent(probability)})"
    return clause


def _uncertainty_clause(*, entropy: float | None, threshold: float | None, referral: bool) -> str:
    if entropy is None or threshold is None:
        return ""
    if referral or entropy >= threshold:
        return (f"; its uncertainty is above the referral threshold (entropy {entropy:.2f} ≥ {threshold:.2f}), "
                "so the case is referred for a second reading")
    return f", with uncertainty below the referral threshold (entropy {entropy:.2f} < {threshold:.2f})"


def concept_headline(concepts: Sequence[dict[str, Any]]) -> str:
    """"haemorrhages (strong) and hard exudates (weak)": the validated concepts (their vector told held-out
    examples from random ones better than chance) that raise this prediction, strongest first; "" when none."""
    told = [
        item for item in concepts if item.get("strength") in _TOLD_STRENGTHS and item.get("validated", True)
    ][:_MAX_CONCEPTS_TOLD]
    return _and([f"{item['concept']} ({item['strength']})" for item in told])


def _similar_clause(similar: Sequence[dict[str, Any]], *, label: str, multilabel: bool) -> tuple[str, int]:
    """How many of the k nearest confirmed cases carry the predicted label, in words; and that count."""
    k = len(similar)
    agreeing = sum(1 for case in similar if label in case.get("labels", []))
    what = f"have {label}" if multilabel else f"were graded {label}"
    if agreeing == 0:
        return f"none of the {k} most similar confirmed cases {what}", 0
    if agreeing == k:
        return f"all {k} of the most similar confirmed cases {what}", agreeing
    return f"{agreeing} of the {k} most similar confirmed cases {what}", agreeing


def compose(
    *,
    label: str,
    probability: float | None,
    multilabel: bool,
    entropy: float | None,
    threshold: float | None,
    referral: bool,
    concepts: Sequence[dict[str, Any]] | None,
    similar_cases: Sequence[dict[str, Any]] | None,
) -> Justification:
    """The justification of one prediction. `concepts` / `similar_cases` are the prediction's stored lists
    (None: the model has none, and the sentence says nothing of them)."""
    inputs: dict[str, Any] = {"label": label, "probability": probability, "entropy": entropy,
                              "threshold": threshold, "referral": referral}
    first = _prediction_clause(label=label, probability=probability, multilabel=multilabel)
    first += _uncertainty_clause(entropy=entropy, threshold=threshold, referral=referral) + "."
    evidence: list[str] = []
    if concepts is not None:
        headline = concept_headline(concepts)
        inputs["concepts"] = [
            {key: item.get(key) for key in ("concept", "strength", "sensitivity")} for item in concepts
        ]
        evidence.append(f"its evidence resembles {headline}" if headline
                        else "no learnt concept stands out in its evidence")
    if similar_cases:
        clause, agreeing = _similar_clause(similar_cases, label=label, multilabel=multilabel)
        inputs["similar_cases"] = {"k": len(similar_cases), "agreeing": agreeing,
                                   "similarities": [round(float(case["similarity"]), 4) for case in similar_cases]}
        evidence.append(clause)
    sentences = [first]
    if evidence:
        second = "; ".join(evidence)
        sentences.append(second[0].upper() + second[1:] + ".")
    return Justification(sentences=sentences, inputs=inputs)
