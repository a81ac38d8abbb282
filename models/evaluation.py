"""Classification metrics: accuracy, macro one-vs-rest AUC, quadratic-weighted kappa, ECE, NLL.

scikit-learn's where it has them (`accuracy_score`, `roc_auc_score`, `cohen_kappa_score(weights="quadratic")`),
the functions the reader-study statistics use. ECE (Guo et al., "On Calibration of Modern Neural Networks",
ICML 2017: top-label confidence, equal-width bins) and the risk-coverage curve of selective prediction are not
in scikit-learn and are computed here, as is the NLL (see `negative_log_likelihood`).

Shapes: `probs` (N, K) rows summing to 1; `labels` (N,) ints in [0, K).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, cohen_kappa_score, roc_auc_score


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(accuracy_score(labels, probs.argmax(axis=1)))


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` (N,) for the boolean `positive` (N,), ties counted as 1/2
    (`roc_auc_score`). NaN when one of the two groups is empty."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, scores))


def macro_auc_ovr(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest AUC of that class's probability, as `roc_auc_score(multi_class="ovr",
    average="macro")`, except that classes absent from `labels` are left out of the mean instead of refused."""
    aucs = [binary_auc(probs[:, k], labels == k) for k in range(probs.shape[1])]
    return float(np.nanmean(aucs))


def quadratic_kappa(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Cohen's kappa with quadratic weights between predicted and true grades (N,) ints
    (`cohen_kappa_score(weights="quadratic")`): the agreement measure of ordinal DR grading (1 perfect, 0
    chance). NaN when undefined (no disagreement is possible by chance)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return float(cohen_kappa_score(labels, predicted, weights="quadratic", labels=np.arange(num_classes)))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """sum over bins of |accuracy - confidence| weighted by the bin's share of samples, binning the
    top-label confidence into `bins` equal-width intervals (lo, hi]."""
    return _binned_gap(probs.max(axis=1), probs.argmax(axis=1) == labels, bins)


def _binned_gap(probability: np.ndarray, outcome: np.ndarray, bins: int) -> float:
    """sum over equal-width bins (lo, hi] of |observed frequency - mean probability|, weighted by the bin's
    share: the ECE of any probability against its 0/1 outcomes."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, probability, side="left") - 1, 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            gap += in_bin.mean() * abs(outcome[in_bin].mean() - probability[in_bin].mean())
    return float(gap)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true label), p clipped at 1e-12. Not `log_loss`: it clips at the dtype's eps (1.2e-7 for the
    float32 of a softmax, so a confident mistake counts far less) and renormalises rows, changing the metric
    the cards record."""
    picked = probs[np.arange(labels.size), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, None))))


def classification_report(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """accuracy, auc_macro_ovr, qwk, ece, nll of (N, K) probabilities against (N,) labels."""
    return {
        "accuracy": accuracy(probs, labels),
        "auc_macro_ovr": macro_auc_ovr(probs, labels),
        "qwk": quadratic_kappa(probs.argmax(axis=1), labels, probs.shape[1]),
        "ece": expected_calibration_error(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
    }


def reliability_table(probs: np.ndarray, labels: np.ndarray, edges: tuple[float, ...] = (0.0, 0.4, 0.5, 0.6, 0.7,
                      0.8, 0.9, 1.0)) -> list[dict[str, float | int]]:
    """How often the model was right when it gave its answer a probability in each band: [{low, high, n,
    accuracy}], the top probability binned at `edges` (the last band includes 1.0); empty bands left out. The
    reading room quotes the band of a prediction ("right N% of the time at this probability")."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    table: list[dict[str, float | int]] = []
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = index == len(edges) - 2
        in_band = (confidence >= low) & ((confidence <= high) if last else (confidence < high))
        if in_band.any():
            table.append({"low": low, "high": high, "n": int(in_band.sum()),
                          "accuracy": round(float(correct[in_band].mean()), 4)})
    return table


def risk_coverage(uncertainty: np.ndarray, errors: np.ndarray) -> dict[str, list[float] | float]:
    """Selective prediction: refer the most uncertain cases first and measure the error on those kept
    (Geifman and El-Yaniv, NeurIPS 2017).

    Args:
        uncertainty: (N,) higher = less sure (e.g. predictive entropy).
        errors: (N,) per-case loss in [0, 1] (1 - correct; or a per-case Hamming loss for multilabel).

    Returns:
        coverage (fraction kept, N+1 points from 0 to 1), risk (mean error of the kept cases; 0 at
        coverage 0), referred (1 - coverage), and aurc (area under the risk-coverage curve, trapezoidal;
        lower is better).
    """
    order = np.argsort(uncertainty, kind="mergesort")  # most certain first
    kept_errors = np.asarray(errors, dtype=np.float64)[order]
    n = kept_errors.size
    counts = np.arange(1, n + 1)
    risk = np.concatenate([[0.0], np.cumsum(kept_errors) / counts])
    coverage = np.concatenate([[0.0], counts / n])
    aurc = float(np.sum((risk[1:] + risk[:-1]) / 2 * np.diff(coverage))) if n else float("nan")
    return {"coverage": [round(float(c), 6) for c in coverage], "risk": [round(float(r), 6) for r in risk],
            "referred": [round(float(1 - c), 6) for c in coverage], "aurc": round(aurc, 6)}


def risk_at_coverage(curve: dict[str, list[float] | float], coverage: float) -> float:
    """The risk of a `risk_coverage` curve when the given fraction of cases is kept (nearest point below)."""
    points = np.asarray(curve["coverage"])
    index = int(np.searchsorted(points, coverage, side="right") - 1)
    return float(np.asarray(curve["risk"])[max(index, 1)])


def multilabel_report(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float | None]:
    """Per-label AUC of (N, K) sigmoid probabilities against (N, K) bool labels, and their macro mean
    (over the labels with both classes present). A label with only one class present gets None."""
    report: dict[str, float | None] = {}
    for k, name in enumerate(names):
        auc = binary_auc(probs[:, k], labels[:, k].astype(bool))
        report[f"auc_{name}"] = None if np.isnan(auc) else round(auc, 6)
    defined = [v for v in report.values() if v is not None]
    report["auc_macro"] = round(float(np.mean(defined)), 6) if defined else None
    return report


def bootstrap_interval(
    probs: np.ndarray, labels: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float], *,
    resamples: int = 2000, seed: int = 0, level: float = 0.95,
) -> tuple[float, float]:
    """A percentile bootstrap interval over cases of `metric(probs, labels)` (Efron and Tibshirani, 1993):
    `resamples` draws of N cases with replacement from a generator seeded with `seed`."""
    generator = np.random.default_rng(seed)
    n = labels.shape[0]
    values = [metric(probs[rows], labels[rows]) for rows in (generator.integers(0, n, n) for _ in range(resamples))]
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return round(float(low), 4), round(float(high), 4)


def bootstrap_auc(
    scores: np.ndarray, positive: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float | int | None]:
    """The AUC of `scores` (N,) for the boolean `positive` (N,), with a percentile bootstrap interval over
    cases (Efron and Tibshirani, 1993): `resamples` draws of N cases with replacement from a generator seeded
    with `seed`; draws holding one class only are left out (their AUC is undefined) and counted.

    Returns:
        auc, low, high (None when the AUC itself is undefined), n, n_positive, resamples_used.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    auc = binary_auc(scores, positive)
    report: dict[str, float | int | None] = {"auc": None, "low": None, "high": None, "n": int(positive.size),
                                             "n_positive": int(positive.sum()), "resamples_used": 0}
    if np.isnan(auc):
        return report
    rows = np.random.default_rng(seed).integers(0, positive.size, size=(resamples, positive.size))
    aucs = mann_whitney_auc(scores[rows], positive[rows])
    aucs = aucs[~np.isnan(aucs)]
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    report.update(auc=round(auc, 6), low=round(float(low), 6), high=round(float(high), 6), resamples_used=aucs.size)
    return report


def mann_whitney_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Row-wise AUC of (B, N) scores for (B, N) bool labels: the Mann-Whitney U of the positives' mid-ranks
    (ties count 1/2, as `roc_auc_score`), divided by n_pos * n_neg; NaN for a row with one class only."""
    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(axis=1).astype(np.float64)
    n_neg = positive.shape[1] - n_pos
    u = np.where(positive, ranks, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def binary_calibration(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, float]:
    """Calibration of per-label presence probabilities (N, K) against (N, K) 0/1 labels, all (case, label)
    pairs pooled: the Brier score (mean squared error) and the ECE of the presence probability itself
    (equal-width bins (lo, hi]; |observed frequency - mean probability| weighted by the bin's share), which
    is what a reader of "effusion 30%" relies on, unlike the top-label ECE of a softmax."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    return {"brier": round(float(np.mean((p - y) ** 2)), 6), "ece": round(_binned_gap(p, y, bins), 6)}
