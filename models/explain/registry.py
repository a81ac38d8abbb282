"""Explainers by their stable names (the names stored in the database and used in URLs).

Each name points at "module:Class"; modules are imported on first use, so asking for GradCAM does not
import every method.
"""

from __future__ import annotations

from importlib import import_module

from torch import nn

from models.card import ModelCard
from models.explain.base import Explainer

EXPLAINERS: dict[str, str] = {
    # One forward + backward (shared by a bundle).
    "gradient": "models.explain.gradients:Gradient",
    "saliency": "models.explain.gradients:Saliency",
    "input_x_gradient": "models.explain.gradients:InputXGradient",
    "deconvnet": "models.explain.guided:Deconvnet",
    "guided_backprop": "models.explain.guided:GuidedBackprop",
    "guided_gradcam": "models.explain.guided:GuidedGradCAM",
    "cam": "models.explain.cam:CAM",
    "gradcam": "models.explain.gradcam:GradCAM",
    "gradcam_pp": "models.explain.cam:GradCAMPlusPlus",
    # Path and sampling methods (many passes, batched).
    "integrated_gradients": "models.explain.integrated_gradients:IntegratedGradients",
    "expressive_gradients": "models.explain.integrated_gradients:ExpressiveGradients",
    "smoothgrad": "models.explain.noise_tunnel:SmoothGrad",
    "vargrad": "models.explain.noise_tunnel:VarGrad",
    "gradient_shap": "models.explain.gradient_shap:GradientShap",
    # Reference-based relevance propagation.
    "deeplift": "models.explain.deeplift:DeepLift",
    "deeplift_shap": "models.explain.deeplift:DeepLiftShap",
    "lrp_epsilon": "models.explain.lrp:LRPEpsilon",
    "lrp_composite": "models.explain.lrp:LRPComposite",
    # Perturbation methods (forward passes only).
    "occlusion": "models.explain.occlusion:Occlusion",
    "feature_ablation": "models.explain.perturbation:FeatureAblation",
    "shapley_sampling": "models.explain.perturbation:ShapleySampling",
    "kernel_shap": "models.explain.perturbation:KernelShap",
    "lime": "models.explain.perturbation:Lime",
}


def explainer_class(name: str) -> type[Explainer]:
    """The class behind a stable name. Raises ValueError if the name is unknown."""
    try:
        module_name, class_name = EXPLAINERS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown explainer {name!r}; known: {sorted(EXPLAINERS)}") from None
    cls = getattr(import_module(module_name), class_name)
    if cls.name != name:
        raise RuntimeError(f"{EXPLAINERS[name]} is registered as {name!r} but calls itself {cls.name!r}")
    return cls


def get_explainer(name: str, model: nn.Module, card: ModelCard) -> Explainer:
    """The explainer called `name` for `model`, configured from its card. Raises ValueError if unknown."""
    return explainer_class(name).from_card(model, card)
