"""Measures of attribution maps: faithfulness, robustness to randomisation, repeatability, localisation.

Batched torch, 2D and 3D. Shapes: `x` (B, C, *spatial) normalised input, `target` (B,) long, `attribution`
(B, 1, *spatial) raw signed map (as every `Explainer` returns), `mask` (B, 1, *spatial) bool lesion mask.
A "score" is the target logit (completeness, sensitivity-n) or the target softmax probability
(deletion / insertion, as Petsiuk et al.). Pixels are removed by setting all their channels to the baseline
(0: the dataset mean in normalised space).

- completeness_delta: Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017;
  Shrikumar et al. 2017 (summation-to-delta).
- sensitivity_n: Ancona, Ceolini, Öztireli and Gross, "Towards better understanding of gradient-based
  attribution methods for Deep Neural Networks", ICLR 2018.
- deletion_auc / insertion_auc: Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation
  of Black-box Models", BMVC 2018.
- randomisation_rank_correlation: Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
- repeatability: distance between maps of identically trained models or repeated runs of a stochastic
  method (e.g. Arun et al., "Assessing the Trustworthiness of Saliency Maps for Localizing Abnormalities in
  Medical Imaging", Radiology: AI 2021).
- pointing_game: Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016.
- relevance_mass / relevance_rank_accuracy: Arras, Osman and Samek, "CLEVR-XAI: A benchmark dataset for
  the ground truth evaluation of neural network explanations", Information Fusion 2022.
- sparsity (Gini index of |map|): Chalasani et al., "Concise Explanations of Neural Networks using
  Adversarial Training", ICML 2020.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.explain.base import Explainer
from models.explain.batching import chunks, rows_per_batch

# Methods whose maps sum to f(x) - f(baseline) with a zero baseline by construction (completeness);
# for the others completeness_delta says little and cheap_scores leaves it out.
COMPLETE_METHODS = frozenset({"deeplift", "integrated_gradients"})


_RANDOMISE_SEED_OFFSET = 2_147_483_000


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def forward_rows(model: nn.Module, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Logits of the rows of `x`, without gradients, in batches the free memory holds (batching.py; at most
    `batch` rows): a 1024 px image's 16 perturbed copies do not go through at once."""
    size = rows_per_batch(model, x[:1], backward=False, max_rows=batch, rows_needed=x.shape[0])
    with torch.no_grad():
        return torch.cat([model(x[part]) for part in chunks(x.shape[0], size)])


def target_logits(model: nn.Module, x: torch.Tensor, target: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    return forward_rows(model, x, batch).gather(1, target.view(-1, 1))[:, 0]


def completeness_delta(model: nn.Module, x: torch.Tensor, target: torch.Tensor, attribution: torch.Tensor,
                       baseline: float | torch.Tensor = 0.0) -> torch.Tensor:
    """(B,) sum of the map minus (f(x) - f(baseline)) of the target logit (0 for a complete method)."""
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    delta = target_logits(model, x, target) - target_logits(model, base, target)
    return _flat(attribution).sum(1) - delta


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of (B, N) tensors (0 where a row is constant)."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)


def _ranks(t: torch.Tensor) -> torch.Tensor:
    return t.argsort(dim=1).argsort(dim=1).to(torch.float64)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) Spearman rank correlation of two batches of maps (ties broken by position)."""
    return _pearson(_ranks(_flat(a)), _ranks(_flat(b)))


def sensitivity_n(model: nn.Module, x: torch.Tensor, target: torch.Tensor, attribution: torch.Tensor, n: int,
                  *, n_subsets: int = 32, feature_mask: torch.Tensor | None = None, baseline: float = 0.0,
                  seed: int = 0) -> torch.Tensor:
    """(B,) Pearson correlation, over `n_subsets` random subsets S of n features, between the sum of the
    map over S and the drop f(x) - f(x with S at the baseline) of the target logit (Ancona et al. 2018).

    Features are pixels, or the segments of `feature_mask` (B, 1, *spatial) long (e.g. superpixels).
    """
    b = x.shape[0]
    mask = feature_mask if feature_mask is not None else torch.arange(
        _flat(attribution).shape[1], device=x.device).view(1, 1, *x.shape[2:]).expand(b, -1, *x.shape[2:])
    generator = torch.Generator().manual_seed(seed)
    full = target_logits(model, x, target)
    out = []
    for row in range(b):
        labels = _flat(mask[row:row + 1])[0]
        k = int(labels.max()) + 1
        chosen = torch.rand(n_subsets, k, generator=generator).argsort(dim=1)[:, :n].to(x.device)
        removed = torch.zeros(n_subsets, k, dtype=torch.bool, device=x.device).scatter_(1, chosen, True)
        pixel_removed = removed[:, labels]  # (S, P)
        sums = (pixel_removed * _flat(attribution[row:row + 1])).sum(1)
        inputs = torch.where(pixel_removed.view(n_subsets, 1, *x.shape[2:]), torch.as_tensor(baseline).to(x), x[row])
        drops = full[row] - target_logits(model, inputs, target[row].expand(n_subsets))
        out.append(_pearson(sums.unsqueeze(0).double(), drops.unsqueeze(0).double())[0])
    return torch.stack(out)


def _order(attribution: torch.Tensor) -> torch.Tensor:
    """(B, P) pixel indices from the highest to the lowest map value (stable: ties in pixel order)."""
    return torch.sort(_flat(attribution), dim=1, descending=True, stable=True).indices


def perturbation_curve(model: nn.Module, x: torch.Tensor, target: torch.Tensor, attribution: torch.Tensor,
                       start: torch.Tensor, end: torch.Tensor, steps: int, *, probability: bool = True,
                       batch: int | None = None) -> torch.Tensor:
    """(B, steps + 1) target score along the path from `start` to `end` (both (B, C, *s)): at step i the
    top i/steps of the pixels (by the map) take their value in `end`, the rest in `start`."""
    b, c, *spatial = x.shape
    pixels = _flat(attribution).shape[1]
    rank = torch.empty_like(_order(attribution))
    rank.scatter_(1, _order(attribution), torch.arange(pixels, device=x.device).expand(b, -1))
    counts = torch.round(torch.linspace(0, pixels, steps + 1, device=x.device)).long()
    switched = rank.unsqueeze(1) < counts.view(1, -1, 1)  # (B, steps + 1, P)
    inputs = torch.where(switched.view(b, steps + 1, 1, *spatial), end.unsqueeze(1), start.unsqueeze(1))
    logits = forward_rows(model, inputs.reshape(b * (steps + 1), c, *spatial), batch)
    scores = logits.softmax(1) if probability else logits
    return scores.gather(1, target.repeat_interleave(steps + 1).view(-1, 1)).view(b, steps + 1)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """(B,) trapezoid area under curves (B, N + 1) sampled evenly over [0, 1]."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def blur(x: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """(B, C, *s) Gaussian-blurred copy (separable, reflect-padded), 1D to 3D."""
    radius = max(1, int(3 * sigma))
    taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    c, dims = x.shape[1], x.dim() - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    out = x
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = taps.numel()
        weight = taps.view(1, 1, *shape).repeat(c, 1, *([1] * dims))
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="reflect" if min(x.shape[2:]) > radius else "replicate"), weight, groups=c)
    return out


def deletion_auc(model: nn.Module, x: torch.Tensor, target: torch.Tensor, attribution: torch.Tensor, *,
                 steps: int = 16, baseline: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion (Petsiuk et al. 2018): remove the most relevant pixels first (set to `baseline`) and follow
    the target probability. Returns (auc (B,), curve (B, steps + 1)); lower is better."""
    curve = perturbation_curve(model, x, target, attribution, x, torch.full_like(x, baseline), steps)
    return auc(curve), curve


def insertion_auc(model: nn.Module, x: torch.Tensor, target: torch.Tensor, attribution: torch.Tensor, *,
                  steps: int = 16, substrate: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Insertion (Petsiuk et al. 2018): start from `substrate` (default a blurred copy of x, as the paper;
    a number: that constant) and insert the most relevant pixels first. Returns (auc (B,), curve
    (B, steps + 1)); higher is better."""
    start = blur(x) if substrate is None else torch.as_tensor(substrate, dtype=x.dtype, device=x.device).expand_as(x)
    curve = perturbation_curve(model, x, target, attribution, start, x, steps)
    return auc(curve), curve


def randomise(model: nn.Module, modules: Sequence[str] | None = None, *, seed: int = 0) -> nn.Module:
    """A copy of `model` with the parameters of `modules` (dotted names; default all) re-initialised by each
    module's `reset_parameters`, seeded; the original is untouched."""
    clone = copy.deepcopy(model)
    names = list(modules) if modules is not None else [n for n, _ in clone.named_modules()]
    with torch.random.fork_rng(devices=[]):
        # Offset: a model built right after torch.manual_seed(seed) would otherwise get its own weights back.
        torch.manual_seed(_RANDOMISE_SEED_OFFSET + seed)
        for name in names:
            module = clone.get_submodule(name)
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and not isinstance(module, nn.modules.batchnorm._NormBase):
                reset()
    return clone


def randomisation_rank_correlation(make_explainer: Callable[[nn.Module], Explainer], model: nn.Module,
                                   x: torch.Tensor, target: torch.Tensor, *, cascading: bool = False,
                                   absolute: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """Model-parameter randomisation test (Adebayo et al. 2018): Spearman between the maps of the trained
    model and of a re-initialised copy. High correlation means the map does not depend on what was learnt.

    Returns {"all": (B,)} with every layer re-initialised, or, with `cascading`, one (B,) entry per weighted
    layer, re-initialising from the top (output) layer down, cumulatively. `absolute` compares |map|.
    """
    reference = make_explainer(model).explain(x, target)
    prepare = torch.abs if absolute else (lambda t: t)
    layers = [n for n, m in model.named_modules() if n and hasattr(m, "reset_parameters")
              and not isinstance(m, nn.modules.batchnorm._NormBase)]
    stages = [("all", None)] if not cascading else [(name, layers[i:]) for i, name in reversed(list(enumerate(layers)))]
    out = {}
    for name, modules in stages:
        maps = make_explainer(randomise(model, modules, seed=seed)).explain(x, target)
        out[name] = spearman(prepare(reference), prepare(maps))
    return out


def repeatability(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B,) mean pairwise L2 distance between maps (each (B, 1, *s)) scaled to unit L2 norm per row, in
    [0, 2]: maps of identically trained models, or repeated runs of a stochastic method (0 = identical)."""
    if len(maps) < 2:
        raise ValueError("repeatability needs at least two maps")
    unit = [_flat(m) / _flat(m).norm(dim=1, keepdim=True).clamp(min=1e-12) for m in maps]
    pairs = [(unit[i] - unit[j]).norm(dim=1) for i in range(len(unit)) for j in range(i + 1, len(unit))]
    return torch.stack(pairs).mean(0)


def pointing_game(attribution: torch.Tensor, mask: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """(B,) 1.0 where the map's maximum lies in the mask (dilated by `tolerance` pixels), else 0.0."""
    hit_area = mask.float()
    if tolerance > 0:
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[mask.dim() - 3]
        hit_area = pool(hit_area, 2 * tolerance + 1, stride=1, padding=tolerance)
    top = _flat(attribution).argmax(dim=1, keepdim=True)
    return _flat(hit_area).gather(1, top)[:, 0]


def relevance_mass(attribution: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) share of the positive relevance that falls inside the mask (Arras et al. 2022)."""
    positive = _flat(attribution).clamp(min=0)
    return (positive * _flat(mask).float()).sum(1) / positive.sum(1).clamp(min=1e-12)


def relevance_rank_accuracy(attribution: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) share of the K highest-relevance pixels that lie in the mask, K = the mask's size (Arras et al. 2022)."""
    inside = _flat(mask).bool()
    sizes = inside.sum(1)
    order = _order(attribution)
    ranks_in = inside.gather(1, order).cumsum(1)  # mask pixels among the top i + 1
    index = (sizes - 1).clamp(min=0).view(-1, 1)
    return ranks_in.gather(1, index)[:, 0].float() / sizes.clamp(min=1).float()


def sparsity(attribution: torch.Tensor) -> torch.Tensor:
    """(B,) Gini index of |map| (0: uniform, towards 1: a few pixels hold all the relevance)."""
    values = torch.sort(_flat(attribution).abs().double(), dim=1).values
    n = values.shape[1]
    index = torch.arange(1, n + 1, dtype=torch.float64, device=values.device)
    total = values.sum(1).clamp(min=1e-12)
    return ((2 * index - n - 1) * values).sum(1) / (n * total)


def cheap_scores(model: nn.Module, x: torch.Tensor, target: torch.Tensor, attribution: torch.Tensor, *,
                 method: str | None = None, steps: int = 8, baseline: float = 0.0) -> dict[str, float]:
    """Scores stored with every heatmap, from 2 * steps forwards (16 by default) in memory-bounded batches.

    Deletion and insertion share their end points (x and the all-baseline input), so one batch gives both
    curves, the target logits for completeness and the target probability. Averages over the rows.
    Keys: deletion_auc, insertion_auc (insertion from the baseline, not a blur, to share the batch),
    sparsity_gini, target_probability, and completeness_delta (|delta| / |f(x) - f(baseline)|) only for a
    method in `COMPLETE_METHODS` or when `method` is None.
    """
    return cheap_scores_of_maps(model, x, target, {method: attribution}, steps=steps, baseline=baseline)[method]


def cheap_scores_of_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                         maps: dict[str | None, torch.Tensor], *, steps: int = 8,
                         baseline: float = 0.0) -> dict[str | None, dict[str, float]]:
    """`cheap_scores` of several methods' maps of the same rows, keyed like `maps` (method name -> map; None
    scores as a method of unknown completeness), from one set of forwards: x and the baseline input are shared
    by all maps, so n maps take 2 + 2 * (steps - 1) * n rows instead of 2 * steps * n, in the fewest batches
    memory allows (on a CPU each pass has a fixed cost: eight maps' scores in eight calls took longer than the
    maps themselves). Equal to `cheap_scores` of each map up to the rounding of larger batches."""
    b, c, *spatial = x.shape
    base = torch.full_like(x, baseline)
    inner = steps - 1
    names = list(maps)
    perturbed = [_perturbed_inputs(x, base, maps[name], steps) for name in names]
    inputs = torch.cat([x.unsqueeze(1), *perturbed, base.unsqueeze(1)], dim=1)
    logits = forward_rows(model, inputs.reshape(-1, c, *spatial)).view(b, inputs.shape[1], -1)
    index = target.view(b, 1, 1).expand(-1, inputs.shape[1], 1)
    picked = logits.gather(2, index)[..., 0]
    probs = logits.softmax(2).gather(2, index)[..., 0]
    scores: dict[str | None, dict[str, float]] = {}
    for number, name in enumerate(names):
        first = 1 + 2 * inner * number
        deletion = torch.cat([probs[:, :1], probs[:, first:first + inner], probs[:, -1:]], 1)
        insertion = torch.cat([probs[:, -1:], probs[:, first + inner:first + 2 * inner], probs[:, :1]], 1)
        attribution = maps[name]
        scores[name] = {"deletion_auc": float(auc(deletion).mean()), "insertion_auc": float(auc(insertion).mean()),
                        "sparsity_gini": float(sparsity(attribution).mean()),
                        "target_probability": float(probs[:, 0].mean())}
        if name is None or name in COMPLETE_METHODS:
            delta = picked[:, 0] - picked[:, -1]
            gap = (_flat(attribution).sum(1) - delta).abs() / delta.abs().clamp(min=1e-12)
            scores[name]["completeness_delta"] = float(gap.mean())
    return scores


def _perturbed_inputs(x: torch.Tensor, base: torch.Tensor, attribution: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, 2 * (steps - 1), C, *spatial): the deletion inputs at the inner steps, then the insertion inputs."""
    b, c, *spatial = x.shape
    rank = torch.empty_like(_order(attribution))
    rank.scatter_(1, _order(attribution), torch.arange(rank.shape[1], device=x.device).expand(b, -1))
    counts = torch.round(torch.linspace(0, rank.shape[1], steps + 1, device=x.device)).long()[1:-1]
    # Deletion keeps the pixels ranked >= count; insertion keeps those ranked < count.
    deleted = (rank.unsqueeze(1) < counts.view(1, -1, 1)).view(b, -1, 1, *spatial)
    return torch.cat([torch.where(deleted, base.unsqueeze(1), x.unsqueeze(1)),
                      torch.where(deleted, x.unsqueeze(1), base.unsqueeze(1))], dim=1)
