"""Concept explanations: how much a human concept (hard exudates, an effusion) pushes a model's class logit.

- TCAV (Kim et al., "Interpretability Beyond Feature Attribution: Quantitative Testing with Concept Activation
  Vectors", ICML 2018): a linear classifier separates a layer's activations of concept examples from those of
  random examples; its unit normal, pointing towards the concept, is the concept activation vector (CAV). An
  image's sensitivity is the directional derivative of the class logit along the CAV; the TCAV score of a class
  is the fraction of its images with positive sensitivity, tested against CAVs of random-vs-random sets.
- Regression concept vectors (Graziani et al., "Regression Concept Vectors for Bidirectional Explanations in
  Histopathology", iMIMIC/MICCAI 2018): a linear regression of the activations onto a continuous concept measure
  (a lesion's area fraction); its normalised coefficients give the direction.

Activations are spatially average-pooled: (B, C, *s) -> (B, C). The matching derivative is that of the logit
when every position of the feature map moves by v, which moves the pooled vector by exactly v: the spatial SUM
of dlogit/dA, dotted with v. A `ConceptBank` ships next to a model's weights (`concepts.npz` + `concepts.json`)
and `concept_evidence` turns a served batch into per-image evidence in words.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.preprocessing import StandardScaler
from torch import nn

from models.explain.base import record_output, resolve_layer

NPZ_FILE, JSON_FILE = "concepts.npz", "concepts.json"
FORMAT_VERSION = 1
QUANTILES = (0.25, 0.5, 0.75, 0.9)
STRENGTHS = ("none", "weak", "moderate", "strong")
MIN_RANDOM_RUNS = 10
_BATCH = 64


class ConceptBankError(ValueError):
    """A concept bank's files are unreadable or inconsistent; says which and why."""


def _pooled_pass(
    model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward (and, with targets, backward) pass: the layer's pooled activations (B, D) and the spatial
    sum of d logit[target] / d activations (B, D). The hook is released in `finally`; eval mode is restored."""
    module = resolve_layer(model, layer)
    training = model.training
    try:
        model.eval()
        # Gradients only when asked for: the worker may call this inside torch.no_grad().
        with record_output(module) as record, torch.set_grad_enabled(targets is not None):
            inputs = x.detach().clone().requires_grad_(targets is not None)
            logits = model(inputs)
            activations = record.output
            if not isinstance(activations, torch.Tensor) or activations.dim() < 3:
                raise ValueError(f"layer {layer!r} does not output a (B, C, *spatial) feature map")
            spatial = tuple(range(2, activations.dim()))
            grads = None
            if targets is not None:
                # Rows do not interact in eval mode: the gradient of the sum is each row's own gradient.
                score = logits.gather(1, targets.view(-1, 1)).sum()
                (grad,) = torch.autograd.grad(score, activations)
                grads = grad.sum(dim=spatial).detach()
            return activations.detach().mean(dim=spatial), grads
    finally:
        model.train(training)


def pooled_activations(model: nn.Module, layer: str, x: torch.Tensor, batch_size: int = _BATCH) -> np.ndarray:
    """(N, D) float64: `layer`'s activations of (N, C, *spatial) inputs, averaged over space."""
    parts = [_pooled_pass(model, layer, chunk, None)[0].cpu() for chunk in x.split(batch_size)]
    return torch.cat(parts).double().numpy()


def pooled_gradients(
    model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor, batch_size: int = _BATCH
) -> np.ndarray:
    """(N, D) float64: per input, the spatial sum of d logit[target] / d `layer`'s activations, so that
    `gradients @ v` is the directional derivative of the logit along a pooled-space direction v."""
    targets = torch.as_tensor(targets, dtype=torch.long, device=x.device).view(-1)
    parts = []
    for chunk, chunk_targets in zip(x.split(batch_size), targets.split(batch_size), strict=True):
        grads = _pooled_pass(model, layer, chunk, chunk_targets)[1]
        assert grads is not None  # targets were given
        parts.append(grads.cpu())
    return torch.cat(parts).double().numpy()


@dataclass(frozen=True)
class Cav:
    """A concept activation vector: `vector` (D,) unit normal towards the concept; an activation a is called
    the concept when a @ vector > `threshold`; `train_accuracy` of that rule on the training sets."""

    vector: np.ndarray
    threshold: float
    train_accuracy: float

    def correct(self, concept_acts: np.ndarray, random_acts: np.ndarray) -> int:
        """How many of the (N, D) concept and (M, D) random activations the rule classifies correctly."""
        return int(
            (concept_acts @ self.vector > self.threshold).sum() + (random_acts @ self.vector <= self.threshold).sum()
        )


def train_cav(concept_acts: np.ndarray, random_acts: np.ndarray, seed: int, *, regularisation: float = 1.0) -> Cav:
    """L2 logistic regression of concept (1) vs random (0) pooled activations, features standardised, classes
    weighted to balance; `regularisation` is scikit-learn's C, `seed` its random_state (lbfgs, the solver used,
    is deterministic). The normal is taken in the raw activation space (coefficients / feature scales), where
    the directional derivatives live."""
    x = np.vstack([concept_acts, random_acts]).astype(np.float64)
    y = np.r_[np.ones(len(concept_acts)), np.zeros(len(random_acts))]
    scaler = StandardScaler().fit(x)
    classifier = LogisticRegression(C=regularisation, class_weight="balanced", max_iter=5000, random_state=seed)
    classifier.fit(scaler.transform(x), y)
    weights = classifier.coef_[0] / scaler.scale_
    norm = float(np.linalg.norm(weights))
    if not norm > 0:
        raise ValueError("the concept and random activations gave a zero CAV (no separating direction)")
    offset = float(classifier.intercept_[0] - weights @ scaler.mean_)
    vector, threshold = weights / norm, -offset / norm
    cav = Cav(vector, threshold, 0.0)
    return dataclasses.replace(cav, train_accuracy=cav.correct(concept_acts, random_acts) / len(y))


def tcav_score(grads_of_class_inputs: np.ndarray, cav: Cav | np.ndarray) -> float:
    """The fraction of a class's (N, D) pooled gradients (`pooled_gradients`) with a positive directional
    derivative along the CAV (Kim et al. 2018, eq. 2)."""
    vector = cav.vector if isinstance(cav, Cav) else np.asarray(cav)
    return float(np.mean(grads_of_class_inputs @ vector > 0))


@dataclass(frozen=True)
class TcavResult:
    """TCAV of one (concept, class): mean/std score of the concept-vs-random CAVs, mean/std of the
    random-vs-random CAVs, the two-sided t-test p-value, and that p Bonferroni-corrected over `comparisons`."""

    score_mean: float
    score_std: float
    random_mean: float
    random_std: float
    p_value: float
    p_corrected: float
    significant: bool
    runs: int
    comparisons: int


def _t_test(scores: np.ndarray, null: np.ndarray) -> float:
    """Welch's two-sided t-test p-value; with no spread in either sample, 1 for equal means and 0 otherwise."""
    if np.ptp(scores) == 0 and np.ptp(null) == 0:
        return 1.0 if scores[0] == null[0] else 0.0
    with warnings.catch_warnings():
        # Scores are fractions with few distinct values; scipy warns of precision loss when a sample is nearly
        # constant (e.g. ten scores of 1.0 and one of 0.99), while its p-value there is still the t-test's.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(scores, null, equal_var=False).pvalue)


def tcav_significance(
    concept_acts: np.ndarray,
    random_sets: Sequence[np.ndarray],
    class_grads: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    regularisation: float = 1.0,
    comparisons: int | None = None,
    alpha: float = 0.05,
) -> dict[str, TcavResult]:
    """TCAV scores of one concept for each class, tested against random-vs-random CAVs (Kim et al. 2018, 3.2).

    Run i trains a CAV of the i-th of R disjoint parts of the concept examples against random set i, and a
    null CAV of the i-th of R disjoint parts of random set 0 (parts of the same sizes) against the same set i;
    Welch's two-sided t-test compares the R concept scores with the R null scores. Disjoint parts make the
    runs independent, as the t-test assumes: with the whole concept set in every run (as in Kim et al.), the
    runs share one draw of the concept set, and on synthetic data 54 of 100 concepts drawn like the random
    sets came out significant at 0.05; with disjoint parts 6 of 100 (tests/models/test_concepts.py checks 20).

    Args:
        concept_acts: (N, D) pooled activations of the concept examples, N >= R.
        random_sets: R + 1 (R >= 10) arrays of random examples' activations; set 0 needs >= N rows.
        class_grads: class name -> (N_c, D) pooled gradients of that class's logit on its inputs.
        seed: shuffles the examples into parts; the solvers' random_state.
        comparisons: how many (concept, class) tests the Bonferroni correction covers (default: the classes).

    Returns:
        class name -> `TcavResult`; significant when the corrected p is below `alpha`.
    """
    runs = len(random_sets) - 1
    if runs < MIN_RANDOM_RUNS:
        raise ValueError(f"need at least {MIN_RANDOM_RUNS + 1} random sets, got {len(random_sets)}")
    if len(concept_acts) < runs or len(random_sets[0]) < len(concept_acts):
        raise ValueError(
            f"need >= {runs} concept examples and as many in random set 0, got "
            f"{len(concept_acts)} and {len(random_sets[0])}"
        )
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(len(concept_acts)), runs)
    # The nulls' "concepts": parts of random set 0 of the same sizes as the concept's parts.
    null_parts = np.array_split(rng.permutation(len(random_sets[0]))[: len(concept_acts)], runs)
    cavs, nulls = [], []
    for i, (part, null_part, negatives) in enumerate(zip(parts, null_parts, random_sets[1:], strict=True)):
        cavs.append(train_cav(concept_acts[part], negatives, seed + i, regularisation=regularisation))
        nulls.append(train_cav(random_sets[0][null_part], negatives, seed + i, regularisation=regularisation))
    tests = comparisons if comparisons is not None else len(class_grads)
    results = {}
    for name, grads in class_grads.items():
        scores = np.array([tcav_score(grads, cav) for cav in cavs])
        null = np.array([tcav_score(grads, cav) for cav in nulls])
        p = _t_test(scores, null)
        corrected = min(1.0, p * tests)
        results[name] = TcavResult(
            float(scores.mean()),
            float(scores.std(ddof=1)),
            float(null.mean()),
            float(null.std(ddof=1)),
            p,
            corrected,
            corrected < alpha,
            runs,
            tests,
        )
    return results


@dataclass(frozen=True)
class HeldoutAccuracy:
    """A CAV's rule on held-out concept and random examples (equal numbers: chance is 0.5), with the one-sided
    binomial test of the correct count against 0.5, and its accuracy on its training sets."""

    accuracy: float
    n: int
    p_value: float
    train_accuracy: float


def heldout_accuracy(cav: Cav, concept_acts: np.ndarray, random_acts: np.ndarray) -> HeldoutAccuracy:
    """`HeldoutAccuracy` of `cav` on (N, D) held-out concept and (M, D) random activations; use N == M."""
    n = len(concept_acts) + len(random_acts)
    correct = cav.correct(concept_acts, random_acts)
    p = float(stats.binomtest(correct, n, 0.5, alternative="greater").pvalue)
    return HeldoutAccuracy(correct / n, n, p, cav.train_accuracy)


@dataclass(frozen=True)
class RegressionConceptVector:
    """A regression concept vector: prediction = acts @ `weights` + `intercept` in raw pooled-activation space;
    `measure` says what is predicted; R^2 on the training and held-out examples."""

    name: str
    measure: str
    weights: np.ndarray
    intercept: float
    r2_train: float
    r2_heldout: float
    n_train: int
    n_heldout: int

    @property
    def direction(self) -> np.ndarray:
        """(D,) the unit direction along which the measure grows."""
        return self.weights / np.linalg.norm(self.weights)

    def predict(self, acts: np.ndarray) -> np.ndarray:
        return acts @ self.weights + self.intercept

    def sensitivity(self, grads: np.ndarray) -> np.ndarray:
        """(N,) directional derivatives of (N, D) pooled gradients along the direction."""
        return grads @ self.direction


def _r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(1.0 - np.sum((truth - predicted) ** 2) / np.sum((truth - truth.mean()) ** 2))


def fit_rcv(
    name: str,
    measure: str,
    acts: np.ndarray,
    values: np.ndarray,
    heldout_acts: np.ndarray,
    heldout_values: np.ndarray,
    *,
    groups: np.ndarray | None = None,
) -> RegressionConceptVector:
    """Ridge regression (standardised features, penalty by cross-validation, folds by `groups` when given, e.g.
    the source photograph) of (N, D) activations onto (N,) concept values; R^2 on the held-out set."""
    scaler = StandardScaler().fit(acts)
    alphas = np.logspace(-2, 4, 13)
    cv = None
    if groups is not None:
        from sklearn.model_selection import GroupKFold

        cv = list(GroupKFold(n_splits=min(5, len(np.unique(groups)))).split(acts, values, groups))
    regression = RidgeCV(alphas=alphas, cv=cv).fit(scaler.transform(acts), values)
    weights = regression.coef_ / scaler.scale_
    intercept = float(regression.intercept_ - weights @ scaler.mean_)
    rcv = RegressionConceptVector(name, measure, weights, intercept, 0.0, 0.0, len(values), len(heldout_values))
    return dataclasses.replace(
        rcv, r2_train=_r2(values, rcv.predict(acts)), r2_heldout=_r2(heldout_values, rcv.predict(heldout_acts))
    )


def reference_quantiles(sensitivities: np.ndarray) -> list[float]:
    """The QUANTILES (25/50/75/90 %) of reference images' sensitivities."""
    return [float(q) for q in np.quantile(sensitivities, QUANTILES)]


def strength(sensitivity: float, quantiles: Sequence[float]) -> str:
    """The sensitivity in words against the reference images of the same class: "none" when it does not raise
    the logit (<= 0), "strong" at or above their 90th percentile, "moderate" at or above their median, "weak"
    otherwise (positive but below the median)."""
    if sensitivity <= 0:
        return "none"
    if sensitivity >= quantiles[3]:
        return "strong"
    return "moderate" if sensitivity >= quantiles[1] else "weak"


@dataclass
class ConceptBank:
    """The concepts shipped with one model: CAVs at one layer, their held-out accuracy, TCAV per class,
    reference quantiles of the per-image sensitivity per (concept, class), and regression concept vectors.

    `vectors` (K, D) unit CAVs and `thresholds` (K,) in the order of `concepts`; `quantiles[concept][class]` the
    QUANTILES of the sensitivity over the class's reference (training) images; `info` records the data used.
    """

    model: str
    layer: str
    classes: list[str]
    concepts: list[str]
    vectors: np.ndarray
    thresholds: np.ndarray
    accuracy: dict[str, HeldoutAccuracy]
    tcav: dict[str, dict[str, TcavResult]]
    quantiles: dict[str, dict[str, list[float]]]
    rcvs: list[RegressionConceptVector] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    def save(self, folder: Path) -> None:
        """Write `concepts.npz` (vectors, thresholds, RCV weights; no pickles) and `concepts.json` (the rest)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        rcv_weights = np.stack([r.weights for r in self.rcvs]) if self.rcvs else np.zeros((0, self.vectors.shape[1]))
        np.savez_compressed(
            folder / NPZ_FILE,
            vectors=self.vectors.astype(np.float32),
            thresholds=self.thresholds.astype(np.float64),
            rcv_weights=rcv_weights.astype(np.float64),
        )
        data = {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "layer": self.layer,
            "classes": self.classes,
            "concepts": self.concepts,
            "quantile_levels": list(QUANTILES),
            "accuracy": {k: dataclasses.asdict(v) for k, v in self.accuracy.items()},
            "tcav": {k: {c: dataclasses.asdict(r) for c, r in v.items()} for k, v in self.tcav.items()},
            "quantiles": self.quantiles,
            "rcvs": [{k: v for k, v in dataclasses.asdict(r).items() if k != "weights"} for r in self.rcvs],
            "info": self.info,
        }
        (folder / JSON_FILE).write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> ConceptBank:
        """The bank in `folder`. Raises FileNotFoundError when it has none, ConceptBankError when its files are
        unreadable or inconsistent (shapes, names, unit vectors, quantiles)."""
        folder = Path(folder)
        if not (folder / JSON_FILE).is_file() or not (folder / NPZ_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no {JSON_FILE} and {NPZ_FILE}")
        try:
            data = json.loads((folder / JSON_FILE).read_text(encoding="utf-8"))
            with np.load(folder / NPZ_FILE, allow_pickle=False) as arrays:
                vectors, thresholds = arrays["vectors"].astype(np.float64), arrays["thresholds"]
                rcv_weights = arrays["rcv_weights"]
            if data.get("format_version") != FORMAT_VERSION:
                raise ConceptBankError(f"format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
            if len(data["rcvs"]) != len(rcv_weights):
                raise ConceptBankError(f"{len(data['rcvs'])} RCVs in {JSON_FILE}, {len(rcv_weights)} in {NPZ_FILE}")
            return cls(
                model=data["model"],
                layer=data["layer"],
                classes=list(data["classes"]),
                concepts=list(data["concepts"]),
                vectors=vectors,
                thresholds=thresholds,
                accuracy={k: HeldoutAccuracy(**v) for k, v in data["accuracy"].items()},
                tcav={k: {c: TcavResult(**r) for c, r in v.items()} for k, v in data["tcav"].items()},
                quantiles=data["quantiles"],
                rcvs=[RegressionConceptVector(**r, weights=w) for r, w in zip(data["rcvs"], rcv_weights, strict=True)],
                info=data.get("info", {}),
            )
        except ConceptBankError as exc:
            raise ConceptBankError(f"{folder}: {exc}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConceptBankError(f"{folder}: unreadable concept bank ({type(exc).__name__}: {exc})") from None


def load_bank(folder: Path) -> ConceptBank | None:
    """`ConceptBank.load`, or None when the folder has no concept bank (the model has no concepts)."""
    try:
        return ConceptBank.load(folder)
    except FileNotFoundError:
        return None


def _validate(bank: ConceptBank) -> None:
    k = len(bank.concepts)
    if k == 0 or len(set(bank.concepts)) != k or len(set(bank.classes)) != len(bank.classes) or not bank.classes:
        raise ConceptBankError("concepts and classes must be non-empty lists of distinct names")
    if bank.vectors.ndim != 2 or bank.vectors.shape[0] != k or bank.thresholds.shape != (k,):
        raise ConceptBankError(
            f"vectors {bank.vectors.shape} and thresholds {bank.thresholds.shape} do not fit {k} concepts"
        )
    if not np.all(np.isfinite(bank.vectors)) or not np.allclose(np.linalg.norm(bank.vectors, axis=1), 1, atol=1e-4):
        raise ConceptBankError("vectors must be finite unit vectors")
    if any(r.weights.shape != (bank.vectors.shape[1],) for r in bank.rcvs):
        raise ConceptBankError(f"RCV weights must have the CAVs' dimension {bank.vectors.shape[1]}")
    for name in bank.concepts:
        if name not in bank.accuracy or set(bank.tcav.get(name, {})) != set(bank.classes):
            raise ConceptBankError(f"concept {name!r}: accuracy or TCAV of every class missing")
        for cls in bank.classes:
            q = bank.quantiles.get(name, {}).get(cls)
            if q is None or len(q) != len(QUANTILES) or not all(math.isfinite(v) for v in q) or sorted(q) != list(q):
                raise ConceptBankError(
                    f"concept {name!r}, class {cls!r}: quantiles must be {len(QUANTILES)} increasing numbers, got {q!r}"
                )


@dataclass(frozen=True)
class ConceptEvidence:
    """One concept for one image: its `sensitivity` (directional derivative of the target class's logit along
    the CAV), that in words (`strength`, one of STRENGTHS), the CAV's held-out accuracy and binomial p, and the
    class's TCAV score with its Bonferroni-corrected p (significant below 0.05)."""

    concept: str
    target: str
    sensitivity: float
    strength: str
    heldout_accuracy: float
    heldout_p: float
    tcav_score: float
    tcav_p: float


def concept_evidence(
    model: nn.Module, bank: ConceptBank, x: torch.Tensor, targets: torch.Tensor | Sequence[int]
) -> list[list[ConceptEvidence]]:
    """Per image of a prepared batch, the evidence of each of the bank's concepts, strongest first.

    Args:
        model: the bank's model (any device; eval mode is used and restored). Not inside torch.inference_mode.
        bank: its `ConceptBank`.
        x: (B, C, *spatial) inputs as the worker prepared them (normalised).
        targets: (B,) the class explained per image (an index into `bank.classes`).

    Returns:
        B lists of len(bank.concepts) `ConceptEvidence`, sorted by strength, then by sensitivity relative to
        the class's reference quantiles.
    """
    targets = torch.as_tensor(targets, dtype=torch.long, device=x.device).view(-1)
    if targets.shape[0] != x.shape[0] or targets.min() < 0 or targets.max() >= len(bank.classes):
        raise ValueError(f"targets must be {x.shape[0]} class indices in [0, {len(bank.classes)})")
    grads = pooled_gradients(model, bank.layer, x, targets)
    if grads.shape[1] != bank.vectors.shape[1]:
        raise ValueError(f"layer {bank.layer!r} has {grads.shape[1]} channels, the bank's CAVs {bank.vectors.shape[1]}")
    sensitivities = grads @ bank.vectors.T
    rows = []
    for row, target in zip(sensitivities, targets.tolist(), strict=True):
        cls, ranked = bank.classes[target], []
        for name, value in zip(bank.concepts, row.tolist(), strict=True):
            q, tcav = bank.quantiles[name][cls], bank.tcav[name][cls]
            word = strength(value, q)
            evidence = ConceptEvidence(
                name,
                cls,
                value,
                word,
                bank.accuracy[name].accuracy,
                bank.accuracy[name].p_value,
                tcav.score_mean,
                tcav.p_corrected,
            )
            ranked.append((STRENGTHS.index(word), float(np.interp(value, q, QUANTILES)), value, evidence))
        ranked.sort(key=lambda item: item[:3], reverse=True)
        rows.append([item[3] for item in ranked])
    return rows
