"""Accuracy and agreement statistics of reader studies: pure functions on numpy arrays, no database.

Layouts: `readers x cases` for kappa and Krippendorff's alpha (as Krippendorff writes reliability data),
`cases x raters` for Fleiss' kappa and `targets x raters` for the ICC (as Fleiss and Shrout & Fleiss write
them). Missing reads are NaN. Each function cites the source of its formula; statistics that are undefined
for the data (no positives, one category only, ...) are NaN rather than an exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats import inter_rater

Level = Literal["nominal", "ordinal", "interval", "ratio"]
ICDR_GRADES = range(5)


def accuracy(*, answers: ArrayLike, reference: ArrayLike) -> float:
    """Proportion of exact agreement between the answers and the reference standard (NaN when empty)."""
    given, truth = np.asarray(answers), np.asarray(reference)
    if given.shape != truth.shape:
        raise ValueError(f"answers {given.shape} and reference {truth.shape} differ in shape")
    return float(np.mean(given == truth)) if given.size else float("nan")


def sensitivity_specificity(*, predicted: ArrayLike, truth: ArrayLike) -> tuple[float, float]:
    """Sensitivity TP / (TP + FN) and specificity TN / (TN + FP) (Altman & Bland 1994, BMJ 308:1552).

    Each is NaN when undefined: sensitivity without positive cases, specificity without negative ones.
    """
    pred, true = _as_bool(predicted, "predicted"), _as_bool(truth, "truth")
    if pred.shape != true.shape:
        raise ValueError(f"predicted {pred.shape} and truth {true.shape} differ in shape")
    positives, negatives = int(true.sum()), int((~true).sum())
    sens = float((pred & true).sum() / positives) if positives else float("nan")
    spec = float((~pred & ~true).sum() / negatives) if negatives else float("nan")
    return sens, spec


def referable(*, grades: ArrayLike, threshold: int = 2) -> NDArray[np.bool_]:
    """Referable diabetic retinopathy: ICDR grade >= 2, moderate NPDR or worse.

    The cut-off of Sayres et al. (2019), Ophthalmology 126:552. Ungradable images must be removed by the
    caller: NaN grades raise instead of counting as non-referable.
    """
    values = np.asarray(grades, dtype=float)
    if np.isnan(values).any():
        raise ValueError("grades contain NaN (ungradable); remove them before dichotomising")
    return values >= threshold


def quadratic_kappa(*, a: ArrayLike, b: ArrayLike, labels: Iterable[int] = ICDR_GRADES) -> float:
    """Cohen's quadratically weighted kappa of two raters (Cohen 1968, Psychol Bull 70:213), via scikit-learn.

    NaN when undefined: no cases, or both raters used one and the same category only (the expected
    disagreement is then 0).
    """
    first, second, allowed = np.asarray(a), np.asarray(b), list(labels)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"a {first.shape} and b {second.shape} must be 1-D of the same length")
    outside = set(np.unique(np.concatenate([first, second])).tolist()) - set(allowed)
    if outside:
        raise ValueError(f"ratings {sorted(outside)} are not among the labels {allowed}")
    if len(set(first.tolist()) | set(second.tolist())) < 2:
        return float("nan")
    return float(cohen_kappa_score(first, second, weights="quadratic", labels=allowed))


def mean_pairwise_kappa(*, matrix: ArrayLike, labels: Iterable[int] = ICDR_GRADES) -> float:
    """Mean quadratic kappa over all reader pairs; `matrix` is readers x cases with NaN = not read.

    Each pair uses the cases both readers read; pairs without a defined kappa (no common case, one
    category only) are left out of the mean, which is NaN when no pair has one.
    """
    reads, allowed = np.asarray(matrix, dtype=float), list(labels)
    if reads.ndim != 2:
        raise ValueError(f"matrix must be readers x cases, got shape {reads.shape}")
    kappas = []
    for i, j in combinations(range(reads.shape[0]), 2):
        both = ~np.isnan(reads[i]) & ~np.isnan(reads[j])
        if both.any():
            kappas.append(quadratic_kappa(a=reads[i, both].astype(int), b=reads[j, both].astype(int), labels=allowed))
    defined = [k for k in kappas if not np.isnan(k)]
    return float(np.mean(defined)) if defined else float("nan")


def fleiss_kappa(*, matrix: ArrayLike, categories: Iterable[float]) -> float:
    """Fleiss' kappa (Fleiss 1971, Psychol Bull 76:378) of `matrix`, cases x raters, via statsmodels.stats.inter_rater.

    Fleiss' kappa needs the same number of ratings per case, so cases with a missing rating (NaN) are
    dropped. NaN when no complete case is left or all ratings fall in one category.
    """
    ratings, allowed = np.asarray(matrix, dtype=float), np.asarray(list(categories), dtype=float)
    if ratings.ndim != 2:
        raise ValueError(f"matrix must be cases x raters, got shape {ratings.shape}")
    complete = ratings[~np.isnan(ratings).any(axis=1)]
    if not np.isin(complete, allowed).all():
        raise ValueError(f"ratings outside the categories {allowed.tolist()}")
    if complete.shape[0] == 0 or np.unique(complete).size < 2:
        return float("nan")
    codes = np.searchsorted(np.sort(allowed), complete)
    table, _ = inter_rater.aggregate_raters(codes, n_cat=allowed.size)
    return float(inter_rater.fleiss_kappa(table, method="fleiss"))


def krippendorff_alpha(*, matrix: ArrayLike, level: Level = "ordinal") -> float:
    """Krippendorff's alpha of reliability data `matrix`, readers x units, NaN = missing.

    Computed from the coincidence matrix o_ck as in Krippendorff (2011), "Computing Krippendorff's
    Alpha-Reliability": alpha = 1 - (n - 1) * sum o_ck d_ck / sum n_c n_k d_ck over pairable values, with
    the squared differences d_ck of the level of measurement. The ordinal one uses the marginals n_g:
    d_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2. NaN when no unit has two values or only one value
    occurs (expected disagreement 0).
    """
    values, coincidences = coincidence_matrix(matrix=matrix)
    marginals = coincidences.sum(axis=1)
    n = marginals.sum()
    delta = _squared_difference(values, marginals, level)
    expected = float(marginals @ delta @ marginals)
    if n < 2 or expected == 0:
        return float("nan")
    return float(1.0 - (n - 1) * np.sum(coincidences * delta) / expected)


def coincidence_matrix(*, matrix: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The values and the coincidence matrix o_ck of reliability data, readers x units (Krippendorff 2011).

    Only pairable values count: units with fewer than two values are left out. Each unit u with m_u values
    adds its number of ordered pairs of values (c, k) from different readers, divided by m_u - 1.
    """
    data = np.asarray(matrix, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"matrix must be readers x units, got shape {data.shape}")
    pairable = data[:, (~np.isnan(data)).sum(axis=0) >= 2]
    values = np.unique(pairable[~np.isnan(pairable)])
    if values.size == 0:
        return values, np.zeros((0, 0))
    counts = np.stack([(pairable == v).sum(axis=0) for v in values], axis=1).astype(float)  # units x values
    weight = 1.0 / (counts.sum(axis=1) - 1.0)
    coincidences = (counts * weight[:, None]).T @ counts - np.diag(weight @ counts)
    return values, coincidences


def _squared_difference(values: NDArray[np.float64], marginals: NDArray[np.float64], level: Level) -> NDArray:
    if level == "nominal":
        return 1.0 - np.eye(values.size)
    if level == "ordinal":
        # sum_{g=c..k} n_g - (n_c + n_k)/2 is the distance of the mid-ranks cumsum(n)_g - n_g/2.
        mid_ranks = np.cumsum(marginals) - marginals / 2.0
        return (mid_ranks[:, None] - mid_ranks[None, :]) ** 2
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    if level == "ratio":
        if (values < 0).any():
            raise ValueError("the ratio metric needs nonnegative values")
        total = values[:, None] + values[None, :]
        diff = values[:, None] - values[None, :]
        return np.divide(diff, total, out=np.zeros_like(diff), where=total != 0) ** 2
    raise ValueError(f"unknown level of measurement {level!r}")


@dataclass(frozen=True)
class IccResult:
    """The six Shrout & Fleiss (1979) ICCs, the two-way ANOVA mean squares and a CI for ICC(2,1)."""

    icc1: float
    icc2: float
    icc3: float
    icc1k: float
    icc2k: float
    icc3k: float
    icc2_ci95: tuple[float, float]
    ms_targets: float
    ms_within: float
    ms_raters: float
    ms_error: float

    def as_dict(self) -> dict[str, float]:
        """The coefficients under the names ICC1, ICC2, ICC3, ICC1k, ICC2k, ICC3k."""
        return {
            "ICC1": self.icc1,
            "ICC2": self.icc2,
            "ICC3": self.icc3,
            "ICC1k": self.icc1k,
            "ICC2k": self.icc2k,
            "ICC3k": self.icc3k,
        }


def icc(*, matrix: ArrayLike) -> IccResult:
    """ICC(1,1), ICC(2,1), ICC(3,1), ICC(1,k), ICC(2,k), ICC(3,k) of a complete targets x raters matrix.

    From the two-way ANOVA mean squares BMS (targets), WMS (within targets), JMS (raters), EMS (residual)
    with the formulas of Shrout & Fleiss (1979), Psychological Bulletin 86:420, Table 1. The 95% CI of
    ICC(2,1) is the F-based interval with Satterthwaite's degrees of freedom of McGraw & Wong (1996),
    Psychological Methods 1:30, Table 7 (case 2A), which is Shrout & Fleiss' interval.
    """
    x = np.asarray(matrix, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2 or np.isnan(x).any():
        raise ValueError(f"icc needs a complete targets x raters matrix with at least 2 x 2, got {x.shape}")
    n, k = x.shape
    grand = x.mean()
    ss_targets = k * np.sum((x.mean(axis=1) - grand) ** 2)
    ss_raters = n * np.sum((x.mean(axis=0) - grand) ** 2)
    ss_total = np.sum((x - grand) ** 2)
    bms, jms = float(ss_targets / (n - 1)), float(ss_raters / (k - 1))
    wms = float((ss_total - ss_targets) / (n * (k - 1)))
    ems = float((ss_total - ss_targets - ss_raters) / ((n - 1) * (k - 1)))
    icc2 = (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)
    return IccResult(
        icc1=(bms - wms) / (bms + (k - 1) * wms),
        icc2=icc2,
        icc3=(bms - ems) / (bms + (k - 1) * ems),
        icc1k=(bms - wms) / bms,
        icc2k=(bms - ems) / (bms + (jms - ems) / n),
        icc3k=(bms - ems) / bms,
        icc2_ci95=_icc2_interval(icc2, n=n, k=k, bms=bms, jms=jms, ems=ems, level=0.95),
        ms_targets=bms,
        ms_within=wms,
        ms_raters=jms,
        ms_error=ems,
    )


def _icc2_interval(rho: float, *, n: int, k: int, bms: float, jms: float, ems: float, level: float) -> tuple:
    """McGraw & Wong (1996) Table 7, case 2A (= Shrout & Fleiss 1979) interval for ICC(2,1)."""
    a = k * rho / (n * (1 - rho))
    b = 1 + k * rho * (n - 1) / (n * (1 - rho))
    v = (a * jms + b * ems) ** 2 / ((a * jms) ** 2 / (k - 1) + (b * ems) ** 2 / ((n - 1) * (k - 1)))
    quantile = 1 - (1 - level) / 2
    f_low, f_high = stats.f.ppf(quantile, n - 1, v), stats.f.ppf(quantile, v, n - 1)
    spread = k * jms + (k * n - k - n) * ems
    low = n * (bms - f_low * ems) / (f_low * spread + n * bms)
    high = n * (f_high * bms - ems) / (spread + n * f_high * bms)
    return float(low), float(high)


def bootstrap_mean_ci(
    *, values: ArrayLike, seed: int, n_resamples: int = 2000, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13), via scipy.stats.bootstrap.

    Resamples come from numpy's default_rng(seed), so the same seed gives the same interval. Constant
    values give the degenerate interval (mean, mean).
    """
    data = np.asarray(values, dtype=float)
    if data.ndim != 1 or data.size < 2 or np.isnan(data).any():
        raise ValueError("values must be a 1-D array of at least two values, without NaN")
    result = stats.bootstrap(
        (data,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return float(data.mean()), float(result.confidence_interval.low), float(result.confidence_interval.high)


def _as_bool(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    array = np.asarray(values)
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must be booleans or 0/1")
    return array.astype(bool)
