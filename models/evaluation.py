"""Classification metrics in numpy: accuracy, macro one-vs-rest AUC, quadratic-weighted kappa, ECE, NLL.

numpy rather than scikit-learn because the project does not depend on scikit-learn; the definitions
follow scikit-learn's `roc_auc_score(multi_class="ovr", average="macro")` and
`cohen_kappa_score(weights="quadratic")`, and ECE follows Guo et al., "On Calibration of Modern Neural
Networks", ICML 2017 (top-label confidence, equal-width bins).

Shapes: `probs` (N, K) rows summing to 1; `labels` (N,) ints in [0, K).
"""

from __future__ import annotations

import numpy as np


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probs.argmax(axis=1) == labels))


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` (N,) for the boolean `positive` (N,), ties counted as 1/2
    (Mann-Whitney U). NaN when one of the two groups is empty."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc_ovr(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest AUC of that class's probability (classes absent from
    `labels` are left out of the mean)."""
    aucs = [binary_auc(probs[:, k], labels == k) for k in range(probs.shape[1])]
    return float(np.nanmean(aucs))


def quadratic_kappa(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Cohen's kappa with quadratic weights between predicted and true grades (N,) ints: the agreement
    measure of ordinal DR grading (1 perfect, 0 chance)."""
    observed = np.zeros((num_classes, num_classes))
    np.add.at(observed, (labels, predicted), 1)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    grades = np.arange(num_classes)
    weights = (grades[:, None] - grades[None, :]) ** 2 / (num_classes - 1) ** 2
    denominator = (weights * expected).sum()
    return float(1.0 - (weights * observed).sum() / denominator) if denominator > 0 else float("nan")


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """sum over bins of |accuracy - confidence| weighted by the bin's share of samples, binning the
    top-label confidence into `bins` equal-width intervals (lo, hi]."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
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


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of (N,) values, tied values sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks
