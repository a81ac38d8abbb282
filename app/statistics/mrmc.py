"""Multi-reader multi-case comparison of modalities: Obuchowski-Rockette with Hillis' degrees of freedom.

The figure of merit (FOM) of each modality x reader is modelled as in Obuchowski & Rockette (1995),
Commun Stat Simul 24:285, with error covariances Var, Cov1 (same reader, other modality), Cov2 (other
reader, same modality) and Cov3 (other reader, other modality) estimated by jackknifing cases. The test of
equal modality FOMs (random readers and random cases) uses Hillis' denominator degrees of freedom:
Hillis et al. (2005), Stat Med 24:1579; Hillis (2007), Stat Med 26:596; Hillis, Berbaum & Metz (2008),
Acad Radiol 15:647.

Only the fully crossed design is supported: every reader reads every case under every modality. See
docs/mrmc.md for what was checked against which published analysis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

FigureOfMerit = Callable[[NDArray[np.float64], NDArray[np.bool_]], float]


def empirical_auc(scores: NDArray[np.float64], truth: NDArray[np.bool_]) -> float:
    """Empirical (trapezoidal) ROC AUC, the Wilcoxon-Mann-Whitney statistic: ties between a positive and a
    negative case count 1/2 (Hanley & McNeil 1982, Radiology 143:29). Higher scores = more suspicious.

    Each positive's wins are counted against the sorted negatives, O(n log n). NaN without positive or
    without negative cases.
    """
    negatives, positives = np.sort(scores[~truth]), scores[truth]
    if positives.size == 0 or negatives.size == 0:
        return float("nan")
    below = np.searchsorted(negatives, positives, side="left")
    tied = np.searchsorted(negatives, positives, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (positives.size * negatives.size))


def proportion_correct(scores: NDArray[np.float64], truth: NDArray[np.bool_]) -> float:
    """Mean of per-case scores, for `scores` that already say whether each read was right (1) or wrong (0).

    `truth` is not used: correctness was scored against it before. Any per-case score works (e.g. a
    quadratic-weighted agreement with the reference grade), which makes the ORH analysis usable for any FOM.
    """
    return float(np.mean(scores))


@dataclass(frozen=True)
class Covariances:
    """Obuchowski-Rockette error variance and covariances, each averaged over its modality/reader pairs.

    `cov2_by_modality` holds Cov2 computed within each modality alone, for the single-modality intervals.
    """

    var: float
    cov1: float
    cov2: float
    cov3: float
    cov2_by_modality: tuple[float, ...]


@dataclass(frozen=True)
class OrhResult:
    """The ORH test of equal modality FOMs with random readers and random cases.

    `difference` is modality 0 minus modality 1 and is only given for two modalities; `modality_ci` are
    the intervals of each modality's mean FOM from that modality's data alone (Hillis 2007).
    """

    foms: NDArray[np.float64]
    modality_means: NDArray[np.float64]
    var: float
    cov1: float
    cov2: float
    cov3: float
    ms_t: float
    ms_tr: float
    f: float
    df_num: int
    ddf_h: float
    p: float
    difference: float | None
    difference_ci: tuple[float, float] | None
    modality_ci: tuple[tuple[float, float], ...]


def mrmc_analysis(
    *, scores: ArrayLike, truth: ArrayLike, fom: FigureOfMerit = empirical_auc, level: float = 0.95
) -> OrhResult:
    """ORH analysis of `scores`, modalities x readers x cases, against `truth`, (cases,) booleans.

    Raises ValueError for missing reads (NaN): split-plot and partially paired designs are not supported.
    """
    ratings, positive = _validated(scores, truth)
    foms = reader_foms(scores=ratings, truth=positive, fom=fom)
    covariances = jackknife_covariances(scores=ratings, truth=positive, fom=fom)
    return orh_test(foms=foms, covariances=covariances, level=level)


def reader_foms(*, scores: ArrayLike, truth: ArrayLike, fom: FigureOfMerit = empirical_auc) -> NDArray[np.float64]:
    """The FOM of each modality x reader, shape (modalities, readers)."""
    ratings, positive = _validated(scores, truth)
    foms = np.array([[fom(reader, positive) for reader in modality] for modality in ratings], dtype=float)
    if np.isnan(foms).any():
        raise ValueError("the figure of merit is undefined for some reader (e.g. AUC without positives)")
    return foms


def jackknife_foms(*, scores: ArrayLike, truth: ArrayLike, fom: FigureOfMerit = empirical_auc) -> NDArray:
    """FOMs with each case left out in turn, shape (modalities, readers, cases): entry k omits case k."""
    ratings, positive = _validated(scores, truth)
    modalities, readers, cases = ratings.shape
    jack = np.empty((modalities, readers, cases))
    keep = np.ones(cases, dtype=bool)
    for k in range(cases):
        keep[k] = False
        subset, subset_truth = ratings[:, :, keep], positive[keep]
        jack[:, :, k] = [[fom(reader, subset_truth) for reader in modality] for modality in subset]
        keep[k] = True
    return jack


def jackknife_covariances(*, scores: ArrayLike, truth: ArrayLike, fom: FigureOfMerit = empirical_auc) -> Covariances:
    """Var, Cov1, Cov2, Cov3 from the jackknife FOMs (Hillis et al. 2005).

    The covariance of two modality-reader FOMs is (n - 1) / n * sum_k (theta_(k) - mean)(theta'_(k) - mean')
    over the n cases; each OR covariance is the mean over the pairs of its kind.
    """
    jack = jackknife_foms(scores=scores, truth=truth, fom=fom)
    if np.isnan(jack).any():
        raise ValueError("the figure of merit is undefined with a case left out (e.g. a single positive case)")
    modalities, readers, cases = jack.shape
    flat = jack.reshape(modalities * readers, cases)
    centred = flat - flat.mean(axis=1, keepdims=True)
    matrix = (cases - 1) / cases * centred @ centred.T
    modality = np.repeat(np.arange(modalities), readers)
    reader = np.tile(np.arange(readers), modalities)
    same_m, same_r = modality[:, None] == modality[None, :], reader[:, None] == reader[None, :]
    return Covariances(
        var=float(np.mean(np.diag(matrix))),
        cov1=_mean_or_nan(matrix[~same_m & same_r]),
        cov2=_mean_or_nan(matrix[same_m & ~same_r]),
        cov3=_mean_or_nan(matrix[~same_m & ~same_r]),
        cov2_by_modality=tuple(
            _mean_or_nan(matrix[same_m & ~same_r & (modality[:, None] == i)]) for i in range(modalities)
        ),
    )


def orh_test(*, foms: ArrayLike, covariances: Covariances, level: float = 0.95) -> OrhResult:
    """Test of equal modality FOMs, random readers and cases (Obuchowski & Rockette 1995; Hillis 2007).

    F = MS(T) / (MS(TR) + J max(Cov2 - Cov3, 0)) on (t - 1, ddf_H) degrees of freedom, with
    ddf_H = (MS(TR) + J max(Cov2 - Cov3, 0))^2 / (MS(TR)^2 / ((t - 1)(J - 1))); `foms` is modalities x readers.
    """
    theta = np.asarray(foms, dtype=float)
    if theta.ndim != 2 or theta.shape[0] < 2 or theta.shape[1] < 2:
        raise ValueError(f"foms must be modalities x readers with at least 2 of each, got {theta.shape}")
    t, j = theta.shape
    means = theta.mean(axis=1)
    effects = _without_rounding_noise(means - theta.mean(), theta)
    interaction = _without_rounding_noise(theta - means[:, None] - theta.mean(axis=0)[None, :] + theta.mean(), theta)
    ms_t = j * float(np.sum(effects**2)) / (t - 1)
    ms_tr = float(np.sum(interaction**2)) / ((t - 1) * (j - 1))
    denominator = ms_tr + j * max(covariances.cov2 - covariances.cov3, 0.0)
    ddf = _hillis_ddf(denominator, ms_tr, (t - 1) * (j - 1))
    f, p = _f_test(ms_t, denominator, t - 1, ddf)
    difference, difference_ci = None, None
    if t == 2:
        difference = float(means[0] - means[1])
        difference_ci = _t_interval(difference, np.sqrt(2 * denominator / j), ddf, level)
    return OrhResult(
        foms=theta,
        modality_means=means,
        var=covariances.var,
        cov1=covariances.cov1,
        cov2=covariances.cov2,
        cov3=covariances.cov3,
        ms_t=ms_t,
        ms_tr=ms_tr,
        f=f,
        df_num=t - 1,
        ddf_h=ddf,
        p=p,
        difference=difference,
        difference_ci=difference_ci,
        modality_ci=_single_modality_intervals(theta, covariances.cov2_by_modality, level),
    )


def _single_modality_intervals(theta: NDArray, cov2: tuple[float, ...], level: float) -> tuple:
    """Interval of each modality's mean FOM from its own data: MS(R) and Cov2 of that modality, df by Hillis."""
    j = theta.shape[1]
    intervals = []
    for row, cov in zip(theta, cov2, strict=True):
        ms_r = float(np.var(row, ddof=1))
        denominator = ms_r + j * max(cov, 0.0)
        ddf = _hillis_ddf(denominator, ms_r, j - 1)
        intervals.append(_t_interval(float(row.mean()), np.sqrt(denominator / j), ddf, level))
    return tuple(intervals)


def _without_rounding_noise(deviations: NDArray, theta: NDArray) -> NDArray:
    # Identical modalities leave deviations of ~1e-17 from summation order; their ratio would be a random F.
    tolerance = 1e-12 * max(1.0, float(np.abs(theta).max()))
    return np.where(np.abs(deviations) < tolerance, 0.0, deviations)


def _hillis_ddf(denominator: float, mean_square: float, df: int) -> float:
    # As the mean square goes to 0 the Satterthwaite degrees of freedom go to infinity.
    if mean_square == 0:
        return float("inf") if denominator > 0 else float("nan")
    return denominator**2 / (mean_square**2 / df)


def _f_test(ms_t: float, denominator: float, df_num: int, ddf: float) -> tuple[float, float]:
    if ms_t == 0:  # identical modality means: no evidence of a difference, whatever the error
        return 0.0, 1.0
    if denominator == 0:
        return float("inf"), 0.0
    f = ms_t / denominator
    return f, float(stats.f.sf(f, df_num, ddf))


def _t_interval(estimate: float, se: float, df: float, level: float) -> tuple[float, float]:
    half = float(stats.t.ppf(1 - (1 - level) / 2, df)) * float(se) if se > 0 else 0.0
    return estimate - half, estimate + half


def _mean_or_nan(values: NDArray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _validated(scores: ArrayLike, truth: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    ratings = np.asarray(scores, dtype=float)
    if ratings.ndim != 3:
        raise ValueError(f"scores must be modalities x readers x cases, got shape {ratings.shape}")
    if np.isnan(ratings).any():
        missing = int(np.isnan(ratings).sum())
        raise ValueError(
            f"{missing} missing reads (NaN): only fully crossed designs are supported, where every reader "
            "reads every case under every modality; split-plot and partially paired designs are not"
        )
    labels = np.asarray(truth)
    if labels.shape != (ratings.shape[2],):
        raise ValueError(f"truth must have one entry per case ({ratings.shape[2]}), got shape {labels.shape}")
    if labels.dtype != bool and not np.isin(labels, (0, 1)).all():
        raise ValueError("truth must be booleans or 0/1")
    return ratings, labels.astype(bool)
