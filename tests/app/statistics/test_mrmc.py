"""ORH analysis: the test stage against published Van Dyke analyses, the jackknife stage against brute force.

The Van Dyke et al. (1993) ratings are only distributed inside GPL-3 R packages, so the full pipeline is
not run on them here. The published per-reader FOMs and OR covariances are fed into `orh_test` instead.
Published numbers: MRMCaov (Smith, Hillis & Pesce), README of version 0.1.8 (jackknife, empirical AUC) and
the draft article docs/jss/MRMCaov.tex (per-reader AUCs, DeLong and unbiased covariances, sensitivity).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from app.statistics import mrmc

# Empirical AUCs of the 5 readers with SE MRI (treatment 1) and cine MRI (treatment 2), published to 7 digits.
# With 45 abnormal and 69 normal cases, an empirical AUC is a multiple of 1 / (2 * 45 * 69) = 1 / 6210.
VAN_DYKE_AUC = np.array(
    [
        [0.9196457, 0.8587762, 0.9038647, 0.9731079, 0.8297907],
        [0.9478261, 0.9053140, 0.9217391, 0.9993559, 0.9299517],
    ]
)
VAN_DYKE_AUC_EXACT = np.round(VAN_DYKE_AUC * 6210) / 6210


def _covariances(var, cov1, cov2, cov3, cov2_by_modality=(0.0, 0.0)):
    return mrmc.Covariances(var=var, cov1=cov1, cov2=cov2, cov3=cov3, cov2_by_modality=cov2_by_modality)


def test_published_aucs_are_empirical_aucs_of_114_cases():
    assert np.abs(VAN_DYKE_AUC * 6210 - np.round(VAN_DYKE_AUC * 6210)).max() < 1e-3
    assert np.abs(VAN_DYKE_AUC_EXACT - VAN_DYKE_AUC).max() < 5e-8


def test_orh_test_reproduces_the_van_dyke_jackknife_analysis():
    covariances = _covariances(0.0008022883, 0.0003466137, 0.0003440748, 0.0002390284, (0.0004839618, 0.0002041879))
    result = mrmc.orh_test(foms=VAN_DYKE_AUC_EXACT, covariances=covariances)
    assert result.modality_means == pytest.approx([0.8970370, 0.9408374], abs=1e-7)
    assert result.ms_t == pytest.approx(0.004796171, rel=1e-6)
    assert result.ms_tr == pytest.approx(0.0005510306, rel=1e-6)
    assert result.f == pytest.approx(4.456319, rel=1e-6)
    assert (result.df_num, result.ddf_h) == (1, pytest.approx(15.25967, rel=1e-6))
    assert result.p == pytest.approx(0.05166569, abs=1e-7)
    assert result.difference == pytest.approx(-0.04380032, abs=1e-8)
    assert result.difference_ci == pytest.approx((-0.0879594986, 0.0003588544), abs=1e-7)
    assert result.modality_ci[0] == pytest.approx((0.8252236, 0.9688505), abs=1e-7)
    assert result.modality_ci[1] == pytest.approx((0.8941378, 0.9875369), abs=1e-7)


@pytest.mark.parametrize(
    ("cov2", "cov3", "f", "ddf", "p"),
    [
        (0.0003395265, 0.0002358497, 4.484854, 15.06611, 0.05123303),  # DeLong covariances
        (0.0003390650, 0.0002356148, 4.489614, 15.03418, 0.0511618),  # unbiased covariances
    ],
)
def test_orh_test_reproduces_the_van_dyke_analyses_with_other_covariances(cov2, cov3, f, ddf, p):
    result = mrmc.orh_test(foms=VAN_DYKE_AUC_EXACT, covariances=_covariances(0.0, 0.0, cov2, cov3))
    assert (result.f, result.ddf_h) == (pytest.approx(f, rel=1e-6), pytest.approx(ddf, rel=1e-6))
    assert result.p == pytest.approx(p, abs=1e-7)


def test_orh_test_reproduces_the_van_dyke_sensitivity_analysis():
    # FOM = sensitivity of "rating >= 3" over the 45 abnormal cases, published to 3 digits (multiples of 1/45).
    sensitivities = np.array([[40, 35, 37, 42, 31], [44, 37, 41, 45, 40]]) / 45
    covariances = _covariances(0.0023681257, 0.0009943883, 0.0010145903, 0.0006604938, (0.001646465, 0.000382716))
    result = mrmc.orh_test(foms=sensitivities, covariances=covariances)
    assert (result.ms_t, result.ms_tr) == (pytest.approx(0.02390123, rel=1e-6), pytest.approx(0.001802469, rel=1e-6))
    assert (result.f, result.ddf_h) == (pytest.approx(6.689493, rel=1e-6), pytest.approx(15.71732, rel=1e-6))
    assert result.p == pytest.approx(0.02008822, abs=1e-7)
    assert result.difference_ci == pytest.approx((-0.1780371, -0.0175185), abs=1e-7)
    assert result.modality_ci[0] == pytest.approx((0.6961876, 0.9482568), abs=1e-7)
    assert result.modality_ci[1][0] == pytest.approx(0.8328691, abs=1e-7)  # MRMCaov clips the upper bound to 1


def test_empirical_auc_counts_ties_as_one_half():
    scores = np.array([1, 2, 2, 3, 3, 3, 4, 5], dtype=float)
    truth = np.array([0, 0, 1, 0, 1, 1, 0, 1], dtype=bool)
    pairs = [(p, n) for p in scores[truth] for n in scores[~truth]]
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert mrmc.empirical_auc(scores, truth) == pytest.approx(brute, abs=1e-12)
    assert mrmc.empirical_auc(scores, truth) == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    assert np.isnan(mrmc.empirical_auc(scores, np.ones(8, dtype=bool)))


def test_jackknife_covariances_equal_a_brute_force_computation():
    scores, truth = _simulated_study(np.random.default_rng(5), modalities=2, readers=3, cases=30, effect=0.5)
    modalities, readers, cases = scores.shape
    jack = np.zeros((modalities, readers, cases))
    for i in range(modalities):
        for j in range(readers):
            for k in range(cases):
                keep = np.arange(cases) != k
                jack[i, j, k] = _brute_force_auc(scores[i, j, keep], truth[keep])
    kinds: dict[str, list[float]] = {"var": [], "cov1": [], "cov2": [], "cov3": []}
    for i, j, i2, j2 in np.ndindex(modalities, readers, modalities, readers):
        a, b = jack[i, j], jack[i2, j2]
        covariance = (cases - 1) / cases * np.sum((a - a.mean()) * (b - b.mean()))
        kind = {(True, True): "var", (False, True): "cov1", (True, False): "cov2", (False, False): "cov3"}
        kinds[kind[(i == i2, j == j2)]].append(covariance)
    result = mrmc.jackknife_covariances(scores=scores, truth=truth)
    for name, values in kinds.items():
        assert getattr(result, name) == pytest.approx(np.mean(values), rel=1e-10), name
    assert result.var > result.cov1 > 0


def test_jackknife_of_a_mean_gives_the_sample_covariance_over_n():
    rng = np.random.default_rng(9)
    correct = (rng.random((2, 3, 50)) < 0.8).astype(float)
    truth = rng.random(50) < 0.5
    result = mrmc.jackknife_covariances(scores=correct, truth=truth, fom=mrmc.proportion_correct)
    sample = np.cov(correct.reshape(6, 50)) / 50
    assert result.var == pytest.approx(np.mean(np.diag(sample)), rel=1e-10)
    assert result.cov1 == pytest.approx(np.mean([sample[j, 3 + j] for j in range(3)]), rel=1e-10)


def test_identical_modalities_give_f_zero_and_p_one():
    scores, truth = _simulated_study(np.random.default_rng(2), modalities=1, readers=4, cases=40, effect=1.0)
    result = mrmc.mrmc_analysis(scores=np.concatenate([scores, scores]), truth=truth)
    assert (result.f, result.p, result.difference) == (0.0, 1.0, 0.0)
    assert result.var == pytest.approx(result.cov1)


def test_a_large_difference_is_detected():
    rng = np.random.default_rng(4)
    scores, truth = _simulated_study(rng, modalities=1, readers=5, cases=80, effect=0.3)
    better = scores + 2.0 * truth[None, None, :]
    result = mrmc.mrmc_analysis(scores=np.concatenate([scores, better]), truth=truth)
    assert result.difference < 0 and result.p < 0.01
    assert result.difference_ci[1] < 0


def test_type_one_error_is_near_the_nominal_level():
    rng = np.random.default_rng(2024)
    p_values = [
        mrmc.mrmc_analysis(scores=s, truth=t).p
        for s, t in (_simulated_study(rng, modalities=2, readers=4, cases=40, effect=1.0) for _ in range(200))
    ]
    assert 0.01 <= np.mean(np.array(p_values) < 0.05) <= 0.10


def test_missing_reads_are_refused():
    scores, truth = _simulated_study(np.random.default_rng(1), modalities=2, readers=3, cases=20, effect=1.0)
    scores[1, 2, 5] = np.nan
    with pytest.raises(ValueError, match="fully crossed"):
        mrmc.mrmc_analysis(scores=scores, truth=truth)


def test_bad_shapes_are_refused():
    scores, truth = _simulated_study(np.random.default_rng(1), modalities=2, readers=3, cases=20, effect=1.0)
    with pytest.raises(ValueError, match="one entry per case"):
        mrmc.mrmc_analysis(scores=scores, truth=truth[:-1])
    with pytest.raises(ValueError, match="modalities x readers x cases"):
        mrmc.mrmc_analysis(scores=scores[0], truth=truth)
    with pytest.raises(ValueError, match="at least 2"):
        mrmc.mrmc_analysis(scores=scores[:, :1], truth=truth)


def test_an_undefined_figure_of_merit_is_refused():
    scores, truth = _simulated_study(np.random.default_rng(1), modalities=2, readers=2, cases=20, effect=1.0)
    one_positive = np.zeros(20, dtype=bool)
    one_positive[3] = True
    with pytest.raises(ValueError, match="undefined"):
        mrmc.mrmc_analysis(scores=scores, truth=one_positive)


def test_three_modalities_give_the_global_test_without_a_pairwise_difference():
    scores, truth = _simulated_study(np.random.default_rng(8), modalities=3, readers=4, cases=40, effect=1.0)
    result = mrmc.mrmc_analysis(scores=scores, truth=truth)
    assert result.df_num == 2 and 0 < result.p <= 1
    assert result.difference is None and result.difference_ci is None
    assert len(result.modality_ci) == 3
    assert all(low < mean < high for (low, high), mean in zip(result.modality_ci, result.modality_means, strict=True))


def _simulated_study(rng, *, modalities: int, readers: int, cases: int, effect: float):
    """Ratings on a 1-5 scale, with case, reader-case and reading noise shared as in the Roe & Metz model."""
    truth = np.arange(cases) % 2 == 0
    case = rng.normal(0, 1, cases) + effect * truth
    reader_case = rng.normal(0, 0.5, (1, readers, cases))
    latent = case + reader_case + rng.normal(0, 0.7, (modalities, readers, cases))
    return np.digitize(latent, [-0.5, 0.25, 1.0, 1.75]).astype(float) + 1, truth


def _brute_force_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p in scores[truth] for n in scores[~truth]]
    return float(np.mean(wins))
