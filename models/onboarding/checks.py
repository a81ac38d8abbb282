"""The checks a coordinator's own model passes before it is served (Lumen issue 19).

The onboarding job loads the uploaded model and its draft card, calls `run_checks`, stores the report and writes
what was measured into the card with `apply_report`. In order, each check recorded with its numbers:

1. forward / backward: the prepared samples give (B, K) finite logits; the top class's input gradient is finite
   and not all zero.
2. target layer: Grad-CAM maps of the card's `target_layer` vary over the image (a layer after global pooling
   gives one value per channel, upsampled to a constant; a dead layer gives zeros).
3. model randomisation (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018), per method: the mean
   Spearman rank correlation of |map| between the model and a copy with every parameter re-initialised
   (`metrics.randomisation_rank_correlation`; parameters `metrics.randomise` cannot reset, as in TorchScript, are
   re-initialised in place on a deep copy). A method whose maps barely change is flagged, not offered by default;
   one that raises is not available.
4. from a labelled validation set: the temperature (Guo et al., ICML 2017), the referral threshold as the
   recipes fit it (`common.REFERRAL_RULE`), and the input-domain gate (`models.ood`): Mahalanobis on the
   penultimate embedding when `ood.embed` works on the network, else the energy of the logits (TorchScript),
   fitted on one half of the validation images with its threshold on the other half.
5. test metrics as served (prepare, the card's uncertainty samples, the fitted temperature) with 95% bootstrap
   intervals.

Without a validation set nothing is calibrated and no gate is fitted: the model is not served automatically.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models import evaluation, ood, uncertainty
from models.calibration import fit_temperature
from models.card import ModelCard
from models.explain import metrics
from models.explain.base import Explainer, gradient_pass
from models.explain.evaluate import make_explainer
from models.explain.registry import explainer_class
from models.recipes import common
from models.recipes.cxr_nih import macro_auc_interval
from models.registry import load_members

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
"""Fraction done in [0, 1] and what runs now, shown to the coordinator."""

MAX_SAMPLES = 8
# Mean rank correlation at or above which a method's maps "barely change" when every parameter is randomised.
# On the shipped RetinaMNIST DenseNet the eight default methods gave -0.33 to 0.36 (4 and 8 validation images,
# seeds 0-2; spread between seeds about 0.15), while the gradient of a small trained net whose logit adds a fixed
# input template stays at 1.000 (-0.28 without it; tests/models/onboarding/test_checks.py): 0.5 lies between them
# with room for that spread.
RANDOMISATION_MAX_SPEARMAN = 0.5
# A Grad-CAM map is constant when its spatial std is below this fraction of its largest |value| (or it is all 0);
# the shipped DenseNet's maps have 0.23-0.30. The layer passes when at least half the samples' maps vary: Grad-CAM
# of one image can be all zero where the class's evidence at the layer is negative everywhere (its ReLU).
CONSTANT_MAP_RELATIVE_STD = 1e-3
TARGET_LAYER_MIN_SHARE = 0.5
_RANDOMISE_SEED_OFFSET = 1_000_003
_VALIDATION_CHECKS = ("calibration", "referral", "input-domain gate")


@dataclass(frozen=True)
class LabelledSet:
    """Labelled images of the model's domain: `labels` (N,) class indices, or (N, K) 0/1 for a multilabel card;
    `source` in words for the report ("validation upload (120 images)")."""

    images: Sequence[ood.ImageLike]
    labels: np.ndarray
    source: str


@dataclass
class CheckReport:
    """What `run_checks` measured. `checks`: {"name", "passed", "detail", "seconds"} in order; `methods`: per
    explanation method {"spearman", "passed", "available", "reason", "seconds"}; `fitted_gate` (not in
    `as_dict`) is saved by `apply_report`. `passed`: forward, backward and the target layer (when named) passed
    and at least one method passed the randomisation test; `serve_automatically`: passed, and a validation set
    was given and its calibration, referral and gate checks passed."""

    checks: list[dict[str, Any]] = field(default_factory=list)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_methods: list[str] = field(default_factory=list)
    flagged: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    passed: bool = False
    serve_automatically: bool = False
    failures: list[str] = field(default_factory=list)
    samples: int = 0
    fitted_gate: ood.Gate | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data of the report (without the fitted gate's arrays)."""
        names = [f.name for f in dataclasses.fields(self) if f.name != "fitted_gate"]
        return {name: copy.deepcopy(getattr(self, name)) for name in names}


@dataclass(frozen=True)
class _Outcome:
    passed: bool
    detail: str
    value: Any = None


def run_checks(model: nn.Module, card: ModelCard, *, samples: Sequence[ood.ImageLike], methods: Sequence[str],
               validation: LabelledSet | None = None, test: LabelledSet | None = None,
               progress: Progress = lambda f, s: None, seed: int = 0) -> CheckReport:
    """Run the checks on `model` (its draft `card`): the first `MAX_SAMPLES` of `samples` for the explanation
    checks, `validation` for calibration, referral and gate, `test` for the metrics. Never raises for the
    model's faults: each is a failed check in the report."""
    report = CheckReport()
    model.eval()
    progress(0.0, "forward pass")
    forward = _check(report, "forward", lambda: _forward(model, card, samples[:MAX_SAMPLES]))
    if not forward.passed:
        return _finish(report, validation, progress)
    x, target = forward.value
    report.samples = int(x.shape[0])
    progress(0.05, "backward pass")
    fine = _check(report, "backward", lambda: _backward(model, x, target)).passed
    if card.target_layer:
        progress(0.1, f"Grad-CAM on {card.target_layer}")
        fine = _check(report, "target layer", lambda: _target_layer(model, card, x, target)).passed and fine
    for number, name in enumerate(methods):
        progress(0.15 + 0.45 * number / max(len(methods), 1), f"model randomisation test: {name}")
        report.methods[name] = _randomisation(model, card, name, x, target, seed)
    _record_methods(report)
    fine = fine and bool(report.default_methods)
    no_embedding = _embedding_error(model, x)
    served = card
    if validation is not None:
        progress(0.6, f"calibration on {validation.source}")
        served = _calibration_checks(report, model, card, validation, no_embedding, seed)
    if test is not None:
        progress(0.85, f"test metrics on {test.source}")
        embeddable = no_embedding is None
        _check(report, "test metrics", lambda: _test_metrics(report, model, served, test, embeddable, seed))
    report.passed = fine
    return _finish(report, validation, progress)


def _check(report: CheckReport, name: str, run: Callable[[], _Outcome]) -> _Outcome:
    started = time.perf_counter()
    try:
        outcome = run()
    except Exception as exc:  # an uploaded model can raise anything: the report says what, the job goes on
        logger.warning("check %s raised", name, exc_info=True)
        outcome = _Outcome(False, f"raised {type(exc).__name__}: {exc}")
    report.checks.append({"name": name, "passed": outcome.passed, "detail": outcome.detail,
                          "seconds": round(time.perf_counter() - started, 3)})
    if not outcome.passed:
        report.failures.append(f"{name}: {outcome.detail}")
    return outcome


def _finish(report: CheckReport, validation: LabelledSet | None, progress: Progress) -> CheckReport:
    validated = [check["passed"] for check in report.checks if check["name"] in _VALIDATION_CHECKS]
    report.serve_automatically = report.passed and validation is not None and all(validated)
    if validation is None:
        report.failures.append("no labelled validation set: no calibration, referral threshold or input-domain "
                               "gate was fitted, so the model is not to be served automatically")
    progress(1.0, "done")
    return report


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _forward(model: nn.Module, card: ModelCard, samples: Sequence[ood.ImageLike]) -> _Outcome:
    x = torch.cat(list(ood.prepared_batches(samples, card, _device(model))))
    with torch.no_grad():
        logits = model(x)
    expected = (x.shape[0], card.num_classes)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        return _Outcome(False, f"{x.shape[0]} prepared samples {tuple(x.shape)} gave {shape}, not {expected} logits")
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        return _Outcome(False, f"{bad} of {x.shape[0]} samples gave NaN or infinite logits")
    return _Outcome(True, f"{x.shape[0]} prepared samples {tuple(x.shape)} gave finite {expected} logits in "
                    f"[{float(logits.min()):.3g}, {float(logits.max()):.3g}]", (x, logits.argmax(1)))


def _backward(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> _Outcome:
    grad = gradient_pass(model, x, target).input_grad
    assert grad is not None  # gradient_pass returns it by default
    if not torch.isfinite(grad).all():
        return _Outcome(False, "the top class's input gradient has NaN or infinite values")
    size = float(grad.abs().mean())
    if size == 0.0:
        return _Outcome(False, "the top class's input gradient is zero everywhere: no gradient method can work")
    return _Outcome(True, f"the top class's input gradient is finite and not zero (mean |gradient| {size:.3g})")


def _target_layer(model: nn.Module, card: ModelCard, x: torch.Tensor, target: torch.Tensor) -> _Outcome:
    maps = _explainer("gradcam", model, card).explain(x, target).flatten(1)
    peak = maps.abs().amax(1)
    ratio = maps.std(1) / peak.clamp(min=1e-30)
    varied = int(((ratio > CONSTANT_MAP_RELATIVE_STD) & (peak > 0)).sum())
    detail = (f"Grad-CAM on {card.target_layer!r} varies over the image on {varied} of {len(maps)} samples "
              f"(spatial std / max {float(ratio.min()):.3g} to {float(ratio.max()):.3g})")
    if varied >= TARGET_LAYER_MIN_SHARE * len(maps):
        return _Outcome(True, detail)
    return _Outcome(False, detail + ": a layer after global pooling gives a constant map and a dead layer zeros; "
                    "name the last convolutional feature map")


def _explainer(name: str, model: nn.Module, card: ModelCard) -> Explainer:
    """`make_explainer`, refusing a layer method (its class takes a `layer`) when the card names no target layer:
    an empty path would resolve to the whole model."""
    if not card.target_layer and "layer" in inspect.signature(explainer_class(name)).parameters:
        raise ValueError(f"{name} needs a target layer, and the card names none")
    return make_explainer(name, model, card)


def _randomisation(model: nn.Module, card: ModelCard, name: str, x: torch.Tensor, target: torch.Tensor,
                   seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        spearman, reinitialised = _rank_correlation(name, model, card, x, target, seed)
    except Exception as exc:  # a method that cannot run on this model is reported, the others still run
        logger.info("method %s not available: %s", name, exc)
        return {"spearman": None, "passed": False, "available": False, "reason": f"not available: "
                f"{type(exc).__name__}: {exc}", "seconds": round(time.perf_counter() - started, 3)}
    passed = spearman < RANDOMISATION_MAX_SPEARMAN
    reason = (f"maps change when every parameter is randomised (mean rank correlation {spearman:.3f} < "
              f"{RANDOMISATION_MAX_SPEARMAN})" if passed else f"maps barely change when every parameter is randomised "
              f"(mean rank correlation {spearman:.3f} >= {RANDOMISATION_MAX_SPEARMAN}): they show the input or the "
              "architecture, not what the model learnt")
    if reinitialised:
        reason += f"; {reinitialised} parameter tensors re-initialised in place (no reset_parameters, e.g. TorchScript)"
    return {"spearman": round(spearman, 4), "passed": passed, "available": True, "reason": reason,
            "seconds": round(time.perf_counter() - started, 3)}


def _rank_correlation(name: str, model: nn.Module, card: ModelCard, x: torch.Tensor, target: torch.Tensor,
                      seed: int) -> tuple[float, int]:
    """Mean Spearman of |map| between `model` and a copy with every parameter randomised, and how many parameter
    tensors `metrics.randomise` could not reset and were re-initialised in place."""
    reinitialised: list[int] = []

    def build(candidate: nn.Module) -> Explainer:
        if candidate is not model:  # the randomised copy
            reinitialised.append(_reinitialise_unchanged(candidate, model, seed))
        return _explainer(name, candidate, card)

    if isinstance(model, torch.jit.ScriptModule):
        # `metrics.randomise` walks modules with get_submodule, which TorchScript refuses: copy, then re-initialise.
        reference = build(model).explain(x, target)
        scores = metrics.spearman(reference.abs(), build(copy.deepcopy(model)).explain(x, target).abs())
    else:
        scores = metrics.randomisation_rank_correlation(build, model, x, target, seed=seed)["all"]
    return float(scores.mean()), sum(reinitialised)


def _reinitialise_unchanged(randomised: nn.Module, original: nn.Module, seed: int) -> int:
    """Re-initialise in place the parameters `metrics.randomise` left as they were (TorchScript modules and bare
    parameters have no `reset_parameters`; normalisation layers are kept, as `randomise` keeps them): weights
    Kaiming-uniform as torch's default init, vectors uniform in +-1/sqrt(size). Returns how many."""
    kept = {name for name, module in randomised.named_modules()
            if isinstance(module, nn.modules.batchnorm._NormBase) or "Norm" in getattr(module, "original_name", "")}
    before = dict(original.named_parameters())
    changed = 0
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(_RANDOMISE_SEED_OFFSET + seed)
        for name, parameter in randomised.named_parameters():
            if name.rpartition(".")[0] in kept or not torch.equal(parameter, before[name]):
                continue
            if parameter.dim() >= 2:
                nn.init.kaiming_uniform_(parameter, a=math.sqrt(5))
            else:
                bound = 1.0 / math.sqrt(parameter.numel())
                nn.init.uniform_(parameter, -bound, bound)
            changed += 1
    return changed


def _record_methods(report: CheckReport) -> None:
    for name, result in report.methods.items():
        if result["passed"]:
            report.default_methods.append(name)
        elif result["available"]:
            report.flagged[name] = result["reason"]
    words = [f"{name} {r['spearman']}" if r["available"] else f"{name} not available"
             for name, r in report.methods.items()]
    detail = (f"mean rank correlation after randomising every parameter, on {report.samples} samples: "
              f"{', '.join(words) or 'no methods asked'}; offered: {', '.join(report.default_methods) or 'none'}")
    report.checks.append({"name": "model randomisation", "passed": bool(report.default_methods), "detail": detail,
                          "seconds": round(sum(r["seconds"] for r in report.methods.values()), 3)})
    if not report.default_methods:
        report.failures.append(f"model randomisation: no method passed ({detail})")


def _embedding_error(model: nn.Module, x: torch.Tensor) -> str | None:
    try:
        ood.embed(model, x[:1])
    except Exception as exc:  # TorchScript, no nn.Linear, or anything an uploaded model raises: the energy gate
        return f"{type(exc).__name__}: {exc}"
    return None


def _pass_over(model: nn.Module, card: ModelCard, images: Sequence[ood.ImageLike], *, embeddable: bool,
               estimate: bool, seed: int) -> tuple[ood.Embedded, list[uncertainty.UncertaintyResult]]:
    """One walk over the images as served, a batch at a time: embeddings ((N, 0) when the network exposes none)
    and logits, and with `estimate` the card's uncertainty estimate of each image (as the worker makes it)."""
    members = load_members(card) if estimate and card.uncertainty.method == "ensemble" else None
    parts, results = [], []
    for x in ood.prepared_batches(images, card, _device(model)):
        if embeddable:
            parts.append(ood.embed(model, x))
        else:
            with torch.no_grad():
                logits = model(x).float()
            parts.append((logits.new_zeros(len(x), 0), logits))
        if estimate:
            results += uncertainty.estimate_batch(model, x, card, members=members, seed=seed)
    embedded = ood.Embedded(torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu())
    return embedded, results


def _calibration_checks(report: CheckReport, model: nn.Module, card: ModelCard, validation: LabelledSet,
                        no_embedding: str | None, seed: int) -> ModelCard:
    """Temperature, referral threshold and gate from `validation` (`no_embedding`: why the network has no
    embedding for a Mahalanobis gate, or None); the card as served with them."""
    embeddable = no_embedding is None
    embedded = _check(report, "calibration", lambda: _temperature(report, model, card, validation, embeddable)).value
    if embedded is None or report.calibration is None:
        return card
    served = dataclasses.replace(card, calibration_temperature=report.calibration["temperature"])
    threshold = _check(report, "referral", lambda: _referral(report, model, served, validation, seed)).value
    if threshold is not None:
        served = dataclasses.replace(served, uncertainty_threshold=threshold)
    _check(report, "input-domain gate", lambda: _gate(report, card, embedded, validation, no_embedding, seed))
    return served


def _temperature(report: CheckReport, model: nn.Module, card: ModelCard, validation: LabelledSet,
                 embeddable: bool) -> _Outcome:
    multilabel = card.task == "multilabel"
    embedded, _ = _pass_over(model, card, validation.images, embeddable=embeddable, estimate=False, seed=0)
    labels = np.asarray(validation.labels)
    temperature = fit_temperature(embedded.logits, torch.as_tensor(labels), multilabel=multilabel)
    if not (math.isfinite(temperature) and temperature > 0):
        return _Outcome(False, f"the temperature fitted on {validation.source} is {temperature}")
    measure = "Brier score" if multilabel else "NLL"
    fit = {}
    for when, t in (("before", 1.0), ("after", temperature)):
        probs = uncertainty.to_probabilities(embedded.logits, t, multilabel=multilabel).double().numpy()
        fit[when] = (evaluation.binary_calibration(probs, labels)["brier"] if multilabel
                     else evaluation.negative_log_likelihood(probs, labels))
    report.calibration = {"temperature": round(temperature, 6), "fitted_on": validation.source, "n": len(embedded),
                          "measure": f"validation {measure}", "before": round(fit["before"], 6),
                          "after": round(fit["after"], 6)}
    return _Outcome(True, f"temperature {temperature:.4f} fitted on {validation.source}: validation {measure} "
                    f"{fit['before']:.4f} -> {fit['after']:.4f}", embedded)


def _case_errors(probs: np.ndarray, labels: np.ndarray, multilabel: bool) -> np.ndarray:
    """(N,) per-case error: 1 - correct, or the Hamming loss at 0.5 for a multilabel card."""
    if multilabel:
        return np.asarray(((probs > 0.5) != (labels > 0.5)).mean(1), dtype=np.float64)
    return np.asarray(probs.argmax(1) != labels, dtype=np.float64)


def _referral_numbers(results: list[uncertainty.UncertaintyResult], labels: np.ndarray, referred: np.ndarray,
                      multilabel: bool) -> dict[str, float | None]:
    probs = np.stack([r.probabilities.double().numpy() for r in results])
    errors = _case_errors(probs, labels, multilabel)
    return {"referred_fraction": round(float(referred.mean()), 4),
            "error_kept": round(float(errors[~referred].mean()), 4) if (~referred).any() else None,
            "error_referred": round(float(errors[referred].mean()), 4) if referred.any() else None}


def _referral(report: CheckReport, model: nn.Module, served: ModelCard, validation: LabelledSet,
              seed: int) -> _Outcome:
    _, results = _pass_over(model, served, validation.images, embeddable=False, estimate=True, seed=seed)
    entropy = torch.tensor([r.predictive_entropy for r in results], dtype=torch.float64)
    threshold = round(uncertainty.referral_threshold(entropy, common.REFER_FRACTION), 6)
    referred = entropy.numpy() > threshold
    numbers = _referral_numbers(results, np.asarray(validation.labels), referred, served.task == "multilabel")
    assert report.calibration is not None  # set by the calibration check just before
    report.calibration["referral"] = {"rule": common.REFERRAL_RULE, "method": served.uncertainty.method,
                                      "samples": served.uncertainty.samples, "threshold": threshold,
                                      "measured_on": validation.source, **numbers}
    return _Outcome(True, f"referral threshold {threshold:.4f} (predictive entropy, {served.uncertainty.method}): "
                    f"refers {numbers['referred_fraction']:.0%} of {validation.source}, error "
                    f"{numbers['error_kept']} kept vs {numbers['error_referred']} referred", threshold)


def _gate(report: CheckReport, card: ModelCard, embedded: ood.Embedded, validation: LabelledSet,
          no_embedding: str | None, seed: int) -> _Outcome:
    if len(embedded) < 4:
        return _Outcome(False, f"{len(embedded)} validation images are too few to fit and set a gate")
    order = np.random.default_rng(seed).permutation(len(embedded))
    fit, held = (torch.from_numpy(np.sort(half)) for half in np.array_split(order, 2))
    halves = [ood.Embedded(embedded.embeddings[rows], embedded.logits[rows]) for rows in (fit, held)]
    multilabel = card.task == "multilabel"
    mahalanobis = no_embedding is None
    classes = None if multilabel else np.asarray(validation.labels)[fit.numpy()]
    fitted = ood.fit_gate(nn.Identity(), card, halves[0], halves[1], train_classes=classes,
                          methods=("mahalanobis", "energy") if mahalanobis else ("energy",))
    target = fitted.report["target_false_rejection"]
    fitted_on = (f"{validation.source}: class means and a shared Ledoit-Wolf covariance of the penultimate "
                 f"embedding fitted on a random half ({len(fit)} images, seed {seed}); threshold at {target:.0%} "
                 f"target false rejection on the other half ({len(held)})" if mahalanobis else
                 f"{validation.source}: energy of the logits (no embedding for a Mahalanobis gate: {no_embedding}); "
                 f"threshold at {target:.0%} target false rejection on a random half ({len(held)} images, seed {seed})")
    kept_because = ("Mahalanobis is kept whenever the network exposes its embedding (no foreign sets at onboarding "
                    "to compare the methods on)" if mahalanobis else "the only method this network allows")
    report.fitted_gate = fitted.gate
    report.gate = {key: fitted.report[key] for key in ("method", "citation", "threshold", "target_false_rejection",
                                                       "false_rejection", "foreign")}
    report.gate.update(comparison={**fitted.report["comparison"], "kept_because": kept_because}, fitted_on=fitted_on)
    rate = fitted.report["false_rejection"]["val"]
    return _Outcome(True, f"{fitted.gate.method} gate, threshold {fitted.gate.threshold:.4g}: refuses "
                    f"{rate['rate']:.1%} of the {rate['n']} held-out validation images (target {target:.0%})")


def _test_metrics(report: CheckReport, model: nn.Module, served: ModelCard, test: LabelledSet, embeddable: bool,
                  seed: int) -> _Outcome:
    multilabel = served.task == "multilabel"
    embedded, results = _pass_over(model, served, test.images, embeddable=embeddable, estimate=True, seed=seed)
    probs = np.stack([r.probabilities.double().numpy() for r in results])
    labels = np.asarray(test.labels)
    values = _multilabel_metrics(probs, labels, served, seed) if multilabel else \
        _classification_metrics(probs, labels, served, seed)
    referred = np.array([r.referral for r in results], dtype=bool)
    report.metrics = {"split": test.source, "n": len(labels), **values,
                      "measured": f"as served: models.preprocessing.prepare, {served.uncertainty.method} with "
                      f"{served.uncertainty.samples} samples, temperature {served.calibration_temperature}; 95% "
                      "percentile bootstrap intervals over cases",
                      **_referral_numbers(results, labels, referred, multilabel)}
    if report.fitted_gate is not None and report.gate is not None:
        refused = report.fitted_gate.scores(embedded.embeddings, embedded.logits) > report.fitted_gate.threshold
        report.gate["false_rejection"]["test"] = {"rate": round(float(refused.mean()), 6), "n": int(refused.size)}
    key = "auc_macro" if multilabel else "auc_macro_ovr"
    auc, low = values[key], values[f"{key}_ci95"][0]
    words = [f"{name} {values[name]:.3f} (95% CI {values[name + '_ci95'][0]:.3f}-{values[name + '_ci95'][1]:.3f})"
             for name in ("accuracy", key, "qwk") if name in values and values[name + "_ci95"][0] is not None]
    detail = f"on {test.source}, as served: {', '.join(words)}"
    if low is None or not low > 0.5:
        return _Outcome(False, f"{detail}: the macro AUC {auc} is not above chance (its 95% interval reaches 0.5)")
    return _Outcome(True, detail)


def _looks_ordinal(card: ModelCard) -> bool:
    """At least 3 labels, and the draft already reports a quadratic kappa or most labels name a grade, a stage,
    a number or a severity (ICDR "none ... PDR", "grade 0" ... "grade 4")."""
    words = {"none", "no", "normal", "minimal", "mild", "moderate", "severe", "grade", "stage", "npdr", "pdr"}
    graded = [any(c.isdigit() for c in label) or bool(words & set(label.lower().split())) for label in card.labels]
    return card.num_classes >= 3 and ("qwk" in card.metrics or sum(graded) * 2 > len(graded))


def _classification_metrics(probs: np.ndarray, labels: np.ndarray, card: ModelCard, seed: int) -> dict[str, Any]:
    auc = macro_auc_interval(probs, np.eye(probs.shape[1])[labels])
    values: dict[str, Any] = {
        "accuracy": round(evaluation.accuracy(probs, labels), 6),
        "accuracy_ci95": list(evaluation.bootstrap_interval(probs, labels, evaluation.accuracy, seed=seed)),
        "auc_macro_ovr": auc["auc"], "auc_macro_ovr_ci95": [auc["low"], auc["high"]],
    }
    if _looks_ordinal(card):

        def qwk(p: np.ndarray, y: np.ndarray) -> float:
            return evaluation.quadratic_kappa(p.argmax(1), y, p.shape[1])

        values["qwk"] = round(qwk(probs, labels), 6)
        values["qwk_ci95"] = list(evaluation.bootstrap_interval(probs, labels, qwk, seed=seed))
    return values


def _multilabel_metrics(probs: np.ndarray, labels: np.ndarray, card: ModelCard, seed: int) -> dict[str, Any]:
    macro = macro_auc_interval(probs, labels)
    per_label = {name: evaluation.bootstrap_auc(probs[:, k], labels[:, k] > 0.5, seed=seed)
                 for k, name in enumerate(card.labels)}
    return {"auc_macro": macro["auc"], "auc_macro_ci95": [macro["low"], macro["high"]], "per_label": per_label}


def apply_report(card: dict[str, Any], report: CheckReport, folder: Path) -> dict[str, Any]:
    """card.json data of the draft `card` updated from `report`; the fitted gate is saved into `folder`."""
    data = copy.deepcopy(card)
    calibration = report.calibration
    if calibration is not None:
        data["calibration_temperature"] = calibration["temperature"]
        if "referral" in calibration:
            data["uncertainty_threshold"] = calibration["referral"]["threshold"]
    measured = {"calibration": {k: v for k, v in calibration.items() if k != "referral"}} if calibration else {}
    if calibration is not None and "referral" in calibration:
        measured["referral"] = calibration["referral"]
    data["metrics"] = {**(report.metrics or data["metrics"]), **measured}
    data["evaluation"] = {**(data.get("evaluation") or {}), "explanations": {
        "default": list(report.default_methods), "flagged": dict(report.flagged),
        "randomisation": {m: r["spearman"] for m, r in report.methods.items() if r["available"]},
        "not_available": {m: r["reason"] for m, r in report.methods.items() if not r["available"]},
        "measured": f"model randomisation test (Adebayo et al., NeurIPS 2018) at onboarding: mean Spearman rank "
        f"correlation of |map| between the model and a copy with every parameter re-initialised, on "
        f"{report.samples} samples; flagged at >= {RANDOMISATION_MAX_SPEARMAN}"}}
    data.pop("ood", None)
    if report.fitted_gate is not None and report.gate is not None:
        sha256 = ood.save_gate(report.fitted_gate, Path(folder) / ood.GATE_FILE)
        data["ood"] = {**report.gate, "file": ood.GATE_FILE, "sha256": sha256}
    data["serve_automatically"] = report.serve_automatically
    data["summary"] = _summary(data, report)
    return data


def _summary(data: dict[str, Any], report: CheckReport) -> str:
    """One plain paragraph from the measured numbers, for the clinicians who see the model."""
    m = report.metrics
    if m is None:
        parts = ["Not measured on a labelled test set"]
    else:
        words = []
        if "accuracy" in m:
            low, high = m["accuracy_ci95"]
            words.append(f"accuracy {m['accuracy']:.2f} (95% CI {low:.2f}-{high:.2f})")
        key = "auc_macro_ovr" if "auc_macro_ovr" in m else "auc_macro"
        words.append(f"mean AUC {m[key]:.2f} ({m[key + '_ci95'][0]:.2f}-{m[key + '_ci95'][1]:.2f})")
        if "qwk" in m:
            words.append(f"quadratic kappa {m['qwk']:.2f}")
        parts = [f"On the {m['split']}, as served: {', '.join(words)}"]
    if report.calibration is not None and "referral" in report.calibration:
        parts.append(f"flags the {common.REFER_FRACTION:.0%} most uncertain cases for careful reading")
    if report.gate is not None:
        parts.append(f"refuses images unlike its validation images ({report.gate['method']} gate)")
    parts.append(f"explanations offered: {', '.join(report.default_methods) or 'none'}")
    if report.flagged:
        parts.append(f"withheld (maps barely depend on the learnt weights): {', '.join(report.flagged)}")
    if not report.serve_automatically:
        parts.append("not run automatically on incoming studies: " + (report.failures[0] if report.failures else ""))
    intended_use = str(data.get("intended_use", ""))
    return "; ".join(parts) + ". " + intended_use[:1].upper() + intended_use[1:] + "."

