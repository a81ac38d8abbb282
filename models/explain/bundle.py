"""Several attribution maps of the same images, computed with as few passes as possible.

`explain_bundle(model, x, target, methods, card_or_options)` plans the passes so that methods share them:

- one forward + backward row per image (a hook on the target layer) gives gradient, saliency,
  input_x_gradient, gradcam, gradcam_pp and cam; rows with a different ReLU backward rule (guided, deconv)
  give guided_backprop, deconvnet and guided_gradcam (PERF-NOTES: six maps 2.3-2.5x faster than six calls);
- integrated_gradients and expressive_gradients share one set of input path rows, and these rows travel in
  the same memory-bounded batches as the single-pass rows (`batching.batched_passes`): the default bundle
  makes as many passes as integrated gradients alone, with 3 rows per image more, and x's logits (for the
  convergence delta) come from the single-pass rows, so only the baseline's row is added; expressive
  gradients adds its layer's own path (n_steps rows per image, in the layer's space);
- smoothgrad and vargrad share one set of noisy passes (same noise, same base method);
- gradient_shap's samples, like the path and noise rows, go through in memory-bounded batches (batching.py);
- any other registered method (deeplift, lrp, occlusion, ...) is delegated to its own class, one by one.

Every map equals the single-method class's output with the same options (tests check 1e-5 relative).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.card import ModelCard
from models.explain.base import Pass, ReLURule, resolve_layer
from models.explain.batching import RowGroup, batched_passes
from models.explain.cam import CAM, GradCAMPlusPlus, final_linear
from models.explain.gradcam import GradCAM
from models.explain.gradient_shap import GradientShap
from models.explain.gradients import Gradient, InputXGradient, Saliency
from models.explain.guided import GuidedGradCAM
from models.explain.integrated_gradients import (
    Baseline,
    ExpressiveGradients,
    IntegratedGradients,
    PathIntegral,
    PathRows,
    make_baseline,
    path_weights,
)
from models.explain.names import EXPLAINERS
from models.explain.noise_tunnel import SmoothGrad, VarGrad, noisy_moments
from models.explain.registry import explainer_class, get_explainer

DEFAULT_METHODS = ("gradient", "saliency", "input_x_gradient", "gradcam", "guided_backprop", "deconvnet",
                   "guided_gradcam", "integrated_gradients")
_FROM_GRADIENT = {"gradient": Gradient, "saliency": Saliency, "input_x_gradient": InputXGradient}
_LAYER_METHODS = {"gradcam", "gradcam_pp", "cam", "guided_gradcam"}
_NORMAL_ROWS = set(_FROM_GRADIENT) | _LAYER_METHODS
SINGLE_PASS = _NORMAL_ROWS | {"guided_backprop", "deconvnet"}
PATH = {"integrated_gradients", "expressive_gradients"}
NOISE = {"smoothgrad": SmoothGrad, "vargrad": VarGrad}


@dataclass(frozen=True)
class BundleOptions:
    """The methods' settings; the defaults are the single-method classes' defaults.

    `target_layer`: dotted path of the layer for the CAM family and expressive gradients. `card`: passed to
    delegated methods (`registry.get_explainer`). The rest as the classes' arguments: integrated gradients
    (n_steps, ig_method, baseline, blur_sigma), expressive gradients (layer_weight), SmoothGrad / VarGrad
    (smooth_base, n_samples, noise_level, seed), GradientSHAP (shap_baselines, shap_samples, seed), and
    `max_rows` (cap on rows per batch).
    """

    target_layer: str | None = None
    n_steps: int = 50
    ig_method: str = "gausslegendre"
    baseline: Baseline = "zeros"
    blur_sigma: float | None = None
    layer_weight: float = 0.5
    smooth_base: str = "gradient"
    n_samples: int = 25
    noise_level: float = 0.15
    shap_baselines: torch.Tensor | None = None
    shap_samples: int = 20
    seed: int = 0
    max_rows: int | None = None
    card: ModelCard | None = field(default=None, compare=False)

    @classmethod
    def from_card(cls, card: ModelCard, **overrides: Any) -> BundleOptions:
        """Options for the model of `card`: its target layer, the defaults, and `overrides`."""
        return cls(target_layer=card.target_layer, card=card, **overrides)


class Bundle(dict[str, torch.Tensor]):
    """The maps by method name, each (B, 1, *spatial); `seconds` by method (a shared pass's time split
    evenly among the methods that share it) and "total"; `deltas` (B,) convergence deltas of
    integrated_gradients and expressive_gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[str, float] = {}
        self.deltas: dict[str, torch.Tensor] = {}


def explain_bundle(model: nn.Module, x: torch.Tensor, target: torch.Tensor, methods: list[str] | tuple[str, ...],
                   card_or_options: ModelCard | BundleOptions) -> Bundle:
    """Maps of `methods` (registered names) for x (B, C, *spatial) and target (B,) long, sharing passes.

    Returns a `Bundle`: dict name -> (B, 1, *spatial) raw map, with `.seconds` and `.deltas`.
    Raises ValueError for an unknown name.
    """
    options = card_or_options if isinstance(card_or_options, BundleOptions) else \
        BundleOptions.from_card(card_or_options)
    unknown = [m for m in methods if m not in EXPLAINERS]
    if unknown:
        raise ValueError(f"unknown explainers {unknown}; known: {sorted(EXPLAINERS)}")
    wanted = list(dict.fromkeys(methods))
    bundle = Bundle()
    start = time.perf_counter()
    groups = [
        ([m for m in wanted if m in SINGLE_PASS | PATH], _gradient_passes),
        ([m for m in wanted if m in NOISE], _noise),
    ]
    for names, run in groups:
        if names:
            _timed(bundle, names, lambda names=names, run=run: run(model, x, target, names, options, bundle))
    for name in wanted:
        if name not in SINGLE_PASS | PATH | set(NOISE):
            _timed(bundle, [name], lambda name=name: _delegate(model, x, target, name, options, bundle))
    bundle.seconds["total"] = time.perf_counter() - start
    return bundle


def _timed(bundle: Bundle, names: list[str], run: Any) -> None:
    start = time.perf_counter()
    run()
    share = (time.perf_counter() - start) / len(names)
    bundle.seconds.update({name: share for name in names})


def _layer(model: nn.Module, options: BundleOptions) -> nn.Module:
    if options.target_layer is None:
        raise ValueError("this bundle needs options.target_layer (the card's target_layer)")
    return resolve_layer(model, options.target_layer)


def _gradient_passes(model: nn.Module, x: torch.Tensor, target: torch.Tensor, names: list[str],
                     options: BundleOptions, bundle: Bundle) -> None:
    # One row per image and ReLU rule (normal, guided, deconv) for the single-pass methods, then the path rows
    # and the baseline's: all in the same memory-bounded batches, so a default bundle makes as many passes as
    # integrated gradients alone (the floor: 3 + n_steps rows per image, batched), and one row more.
    single, path_names = [m for m in names if m in SINGLE_PASS], [m for m in names if m in PATH]
    rules = [rule for rule, needed in ((ReLURule.NORMAL, _NORMAL_ROWS), (ReLURule.GUIDED, {"guided_backprop",
             "guided_gradcam"}), (ReLURule.DECONV, {"deconvnet"})) if needed & set(single)]
    at_x = {rule: RowGroup(len(x), lambda part: (x[part], target[part]), rule=rule) for rule in rules}
    groups = list(at_x.values())
    layer = _layer(model, options) if _LAYER_METHODS & set(single) or "expressive_gradients" in path_names else None
    input_grad = bool(path_names) or bool(set(single) - {"gradcam", "gradcam_pp", "cam"})
    path = _path_rows(x, target, path_names, options, with_x=not at_x) if path_names else None
    groups += path.groups if path is not None else []
    batched_passes(model, groups, like=x[:1], layer=layer, input_grad=input_grad, max_rows=options.max_rows)
    passes = {rule: group.collected() for rule, group in at_x.items()}
    if single:
        bundle.update(_single_pass_maps(model, x, target, single, passes))
    if path is not None:
        integral = path.integral(at_x=passes[rules[0]] if rules else None)
        _path_maps(model, layer, path, integral, path_names, options, bundle)


def _path_rows(x: torch.Tensor, target: torch.Tensor, names: list[str], options: BundleOptions, *,
               with_x: bool) -> PathRows:
    alphas, weights = path_weights(options.ig_method, options.n_steps)
    baseline = make_baseline(x, options.baseline, sigma=options.blur_sigma)
    return PathRows(x, baseline, target, alphas, weights, with_x=with_x, with_layer="expressive_gradients" in names)


def _single_pass_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, names: list[str],
                      passes: dict[ReLURule, Pass]) -> dict[str, torch.Tensor]:
    spatial = list(x.shape[2:])
    grads = {rule: result.input_grad for rule, result in passes.items() if result.input_grad is not None}
    maps: dict[str, torch.Tensor] = {}
    for name, cls in _FROM_GRADIENT.items():
        if name in names:
            maps[name] = cls.from_gradient(x, grads[ReLURule.NORMAL]).sum(1, keepdim=True)
    if "guided_backprop" in names:
        maps["guided_backprop"] = grads[ReLURule.GUIDED].sum(1, keepdim=True)
    if "deconvnet" in names:
        maps["deconvnet"] = grads[ReLURule.DECONV].sum(1, keepdim=True)
    if _LAYER_METHODS & set(names):
        normal = passes[ReLURule.NORMAL]
        acts, layer_grad = normal.activations, normal.layer_grad
        assert acts is not None and layer_grad is not None  # _gradient_passes recorded the layer for these
        gradcam = GradCAM.from_layer(acts, layer_grad, spatial)
        if "gradcam" in names:
            maps["gradcam"] = gradcam
        if "gradcam_pp" in names:
            maps["gradcam_pp"] = GradCAMPlusPlus.from_layer(acts, layer_grad, spatial)
        if "cam" in names:
            maps["cam"] = CAM.from_layer(acts, normal.logits, target, final_linear(model), spatial)
        if "guided_gradcam" in names:
            maps["guided_gradcam"] = GuidedGradCAM.combine(grads[ReLURule.GUIDED], gradcam).sum(1, keepdim=True)
    return maps


def _path_maps(model: nn.Module, layer: nn.Module | None, path: PathRows, integral: PathIntegral, names: list[str],
               options: BundleOptions, bundle: Bundle) -> None:
    attribution, delta = IntegratedGradients.from_integral(path.x, path.baseline, integral)
    if "integrated_gradients" in names:
        bundle["integrated_gradients"] = attribution.sum(1, keepdim=True)
        bundle.deltas["integrated_gradients"] = delta
    if "expressive_gradients" in names:
        assert layer is not None  # _gradient_passes records the layer when expressive_gradients is asked
        alphas, weights = path_weights(options.ig_method, options.n_steps)
        bundle["expressive_gradients"], _ = ExpressiveGradients.from_integral(
            model, layer, path.x, path.target, attribution, integral, alphas=alphas, weights=weights,
            layer_weight=options.layer_weight, max_rows=options.max_rows)
        bundle.deltas["expressive_gradients"] = delta


def _noise(model: nn.Module, x: torch.Tensor, target: torch.Tensor, names: list[str], options: BundleOptions,
           bundle: Bundle) -> None:
    smooth = SmoothGrad(model, options.smooth_base, n_samples=options.n_samples, noise_level=options.noise_level,
                        seed=options.seed, max_rows=options.max_rows)
    mean, mean_sq = noisy_moments(smooth.method, x, target, smooth.draw_noise(x), max_rows=options.max_rows)
    for name in names:
        bundle[name] = NOISE[name].reduce(mean, mean_sq).sum(1, keepdim=True)


def _delegate(model: nn.Module, x: torch.Tensor, target: torch.Tensor, name: str, options: BundleOptions,
              bundle: Bundle) -> None:
    if name == "gradient_shap":
        explainer: Any = GradientShap(model, options.shap_baselines, n_samples=options.shap_samples,
                                      seed=options.seed, max_rows=options.max_rows)
    elif options.card is not None:
        explainer = get_explainer(name, model, options.card)
    else:
        explainer = explainer_class(name)(model)
    bundle[name] = explainer.explain(x, target)

