"""Accuracy and agreement statistics (app/statistics/agreement.py) against published worked examples and hand
computations."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from app.statistics import agreement

N = np.nan

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
        [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
    ]
)

# Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges.
SHROUT_FLEISS_1979 = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])

# Fleiss (1971): 30 patients x 6 psychiatrists, 5 diagnoses (1 depression ... 5 other), as in R irr::diagnoses.
FLEISS_1971 = np.array(
    [
        [4, 4, 4, 4, 4, 4],
        [2, 2, 2, 5, 5, 5],
        [2, 3, 3, 3, 3, 5],
        [5, 5, 5, 5, 5, 5],
        [2, 2, 2, 4, 4, 4],
        [1, 1, 3, 3, 3, 3],
        [3, 3, 3, 3, 5, 5],
        [1, 1, 3, 3, 3, 4],
        [1, 1, 4, 4, 4, 4],
        [5, 5, 5, 5, 5, 5],
        [1, 4, 4, 4, 4, 4],
        [1, 2, 4, 4, 4, 4],
        [2, 2, 2, 3, 3, 3],
        [1, 4, 4, 4, 4, 4],
        [2, 2, 4, 4, 4, 5],
        [3, 3, 3, 3, 3, 5],
        [1, 1, 1, 4, 5, 5],
        [1, 1, 1, 1, 1, 2],
        [2, 2, 4, 4, 4, 4],
        [1, 3, 3, 5, 5, 5],
        [5, 5, 5, 5, 5, 5],
        [2, 4, 4, 4, 4, 4],
        [2, 2, 4, 5, 5, 5],
        [1, 1, 4, 4, 4, 4],
        [1, 4, 4, 4, 4, 5],
        [2, 2, 2, 2, 2, 4],
        [1, 1, 1, 1, 5, 5],
        [2, 2, 4, 4, 4, 4],
        [1, 3, 3, 3, 3, 3],
        [5, 5, 5, 5, 5, 5],
    ]
)


def test_accuracy_is_the_proportion_of_exact_agreement():
    assert agreement.accuracy(answers=[0, 1, 2, 2], reference=[0, 1, 1, 2]) == 0.75
    assert np.isnan(agreement.accuracy(answers=[], reference=[]))
    with pytest.raises(ValueError):
        agreement.accuracy(answers=[0, 1], reference=[0, 1, 2])


def test_sensitivity_and_specificity_of_known_vectors():
    truth = [1, 1, 1, 1, 0, 0, 0]
    predicted = [1, 1, 1, 0, 1, 0, 0]
    assert agreement.sensitivity_specificity(predicted=predicted, truth=truth) == (0.75, pytest.approx(2 / 3))


def test_sensitivity_and_specificity_are_nan_when_undefined():
    sens, spec = agreement.sensitivity_specificity(predicted=[True, False], truth=[True, True])
    assert sens == 0.5 and np.isnan(spec)
    sens, spec = agreement.sensitivity_specificity(predicted=[True, False], truth=[False, False])
    assert np.isnan(sens) and spec == 0.5


def test_referable_is_icdr_grade_two_or_worse():
    assert agreement.referable(grades=[0, 1, 2, 3, 4]).tolist() == [False, False, True, True, True]
    with pytest.raises(ValueError, match="ungradable"):
        agreement.referable(grades=[0, N, 3])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadratic_kappa_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, 60)
    b = np.clip(a + rng.integers(-1, 2, 60), 0, 4)
    expected = cohen_kappa_score(a, b, weights="quadratic", labels=list(range(5)))
    assert agreement.quadratic_kappa(a=a, b=b) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected < 1


def test_quadratic_kappa_perfect_undefined_and_invalid():
    assert agreement.quadratic_kappa(a=[0, 2, 4], b=[0, 2, 4]) == pytest.approx(1.0)
    assert np.isnan(agreement.quadratic_kappa(a=[2, 2, 2], b=[2, 2, 2]))
    with pytest.raises(ValueError, match="labels"):
        agreement.quadratic_kappa(a=[0, 7], b=[0, 1])


def test_mean_pairwise_kappa_uses_the_cases_both_readers_read():
    matrix = np.array([[0, 1, 2, 3, 4, N], [0, 1, 3, 3, N, 2], [1, 1, 2, N, 4, 2]])
    pairs = [((0, 1), [0, 1, 2, 3]), ((0, 2), [0, 1, 2, 4]), ((1, 2), [0, 1, 2, 5])]
    expected = np.mean(
        [
            cohen_kappa_score(matrix[i, cols], matrix[j, cols], weights="quadratic", labels=list(range(5)))
            for (i, j), cols in pairs
        ]
    )
    assert agreement.mean_pairwise_kappa(matrix=matrix) == pytest.approx(expected, abs=1e-12)


def test_fleiss_kappa_reproduces_fleiss_1971():
    # The category totals guard the transcription of the table.
    assert np.unique(FLEISS_1971, return_counts=True)[1].tolist() == [26, 26, 30, 55, 43]
    kappa = agreement.fleiss_kappa(matrix=FLEISS_1971, categories=range(1, 6))
    assert round(kappa, 3) == 0.430  # Fleiss (1971)
    assert kappa == pytest.approx(0.4302445, abs=1e-7)  # R irr::kappam.fleiss(diagnoses)


def test_fleiss_kappa_drops_cases_with_a_missing_rating():
    with_missing = np.vstack([FLEISS_1971, [1, 2, N, 3, 3, 3]])
    assert agreement.fleiss_kappa(matrix=with_missing, categories=range(1, 6)) == pytest.approx(0.4302445, abs=1e-7)
    assert np.isnan(agreement.fleiss_kappa(matrix=[[2, 2], [2, 2]], categories=range(5)))


def test_krippendorff_coincidence_matrix_of_the_2011_example():
    values, coincidences = agreement.coincidence_matrix(matrix=KRIPPENDORFF_2011)
    assert values.tolist() == [1, 2, 3, 4, 5]
    assert coincidences[0].tolist() == pytest.approx([7, 4 / 3, 1 / 3, 1 / 3, 0])
    assert coincidences.sum(axis=1).tolist() == pytest.approx([9, 13, 10, 5, 3])  # n_c; unit 12 is unpairable
    assert coincidences.sum() == pytest.approx(40)


@pytest.mark.parametrize(
    ("level", "published", "exact"),
    [
        ("nominal", 0.743, Fraction(113, 152)),
        ("ordinal", 0.815, Fraction(108577, 133160)),
        ("interval", 0.849, Fraction(951, 1120)),
        ("ratio", 0.797, Fraction(18222619, 22852465)),
    ],
)
def test_krippendorff_alpha_reproduces_the_2011_worked_example(level, published, exact):
    alpha = agreement.krippendorff_alpha(matrix=KRIPPENDORFF_2011, level=level)
    assert round(alpha, 3) == published
    assert alpha == pytest.approx(float(exact), abs=1e-12)
    assert exact == _pairwise_alpha_exact(KRIPPENDORFF_2011, level)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_alpha_equals_the_pairwise_definition_on_generated_data(level):
    rng = np.random.default_rng(11)
    data = rng.integers(1, 6, size=(5, 30)).astype(float)
    data[rng.random(data.shape) < 0.3] = N
    alpha = agreement.krippendorff_alpha(matrix=data, level=level)
    assert alpha == pytest.approx(float(_pairwise_alpha_exact(data, level)), abs=1e-12)


def test_krippendorff_ordinal_depends_on_order_only():
    data = np.array([[1, 2, 3, 4, 5, 2], [1, 3, 3, 4, 4, 2], [2, 2, 3, 5, 5, N]])
    relabelled = np.select([data == v for v in range(1, 6)], [10, 11, 50, 51, 400], default=N)
    ordinal = agreement.krippendorff_alpha(matrix=data, level="ordinal")
    assert agreement.krippendorff_alpha(matrix=relabelled, level="ordinal") == pytest.approx(ordinal, abs=1e-12)
    assert agreement.krippendorff_alpha(matrix=relabelled, level="interval") != pytest.approx(
        agreement.krippendorff_alpha(matrix=data, level="interval"), abs=1e-3
    )


def test_krippendorff_alpha_perfect_agreement_and_undefined():
    assert agreement.krippendorff_alpha(matrix=[[1, 2, 3, N], [1, 2, 3, 4]], level="ordinal") == 1.0
    assert np.isnan(agreement.krippendorff_alpha(matrix=[[2, 2, N], [2, 2, 3]]))
    assert np.isnan(agreement.krippendorff_alpha(matrix=[[1, N], [N, 2]]))


def test_icc_reproduces_shrout_and_fleiss_1979():
    result = agreement.icc(matrix=SHROUT_FLEISS_1979)
    published = {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62, "ICC3k": 0.91}
    assert {name: round(value, 2) for name, value in result.as_dict().items()} == published
    mean_squares = (result.ms_targets, result.ms_within, result.ms_raters, result.ms_error)
    assert [round(ms, 2) for ms in mean_squares] == [11.24, 6.26, 32.49, 1.02]


def test_icc2_interval_contains_the_estimate_and_covers_the_truth():
    low, high = agreement.icc(matrix=SHROUT_FLEISS_1979).icc2_ci95
    assert low < 0.2898 < high
    rng = np.random.default_rng(7)
    rho, runs, covered = 0.4, 1500, 0  # target 1, rater 0.5, error 1: rho = 1 / 2.5
    for _ in range(runs):
        x = rng.normal(0, 1, (20, 1)) + rng.normal(0, np.sqrt(0.5), (1, 4)) + rng.normal(0, 1, (20, 4))
        low, high = agreement.icc(matrix=x).icc2_ci95
        covered += low <= rho <= high
    assert 0.92 <= covered / runs <= 0.97


def test_bootstrap_is_reproducible_and_covers_the_mean():
    values = np.random.default_rng(3).normal(0.8, 0.1, 40)
    first = agreement.bootstrap_mean_ci(values=values, seed=42)
    assert first == agreement.bootstrap_mean_ci(values=values, seed=42)
    assert first != agreement.bootstrap_mean_ci(values=values, seed=43)
    mean, low, high = first
    assert mean == pytest.approx(values.mean())
    assert low < mean < high
    assert high - low == pytest.approx(2 * 1.96 * values.std(ddof=1) / np.sqrt(40), rel=0.2)
    assert agreement.bootstrap_mean_ci(values=[0.5, 0.5, 0.5], seed=1) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least two"):
        agreement.bootstrap_mean_ci(values=[0.5], seed=1)


def _pairwise_alpha_exact(data: np.ndarray, level: str) -> Fraction:
    """Alpha from its definition over pairs of values, in exact arithmetic (Krippendorff 2011, eq. 1-3)."""
    units = [[int(v) for v in column if not np.isnan(v)] for column in np.asarray(data).T]
    units = [u for u in units if len(u) >= 2]
    pooled = [v for u in units for v in u]
    counts = {v: pooled.count(v) for v in set(pooled)}

    def delta(c: int, k: int) -> Fraction:
        if level == "nominal":
            return Fraction(int(c != k))
        if level == "ordinal":
            low, high = min(c, k), max(c, k)
            between = sum(n for v, n in counts.items() if low <= v <= high)
            return (between - Fraction(counts[c] + counts[k], 2)) ** 2
        if level == "interval":
            return Fraction((c - k) ** 2)
        return Fraction(c - k, c + k) ** 2

    observed = sum(
        Fraction(2, len(u) - 1) * delta(u[a], u[b]) for u in units for a, b in combinations(range(len(u)), 2)
    )
    expected = sum(2 * delta(pooled[a], pooled[b]) for a, b in combinations(range(len(pooled)), 2))
    return 1 - (len(pooled) - 1) * observed / expected
