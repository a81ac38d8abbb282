"""The stable names of the attribution methods, and where each class lives. Torch-free: the web app
validates requested method names with it."""

from __future__ import annotations

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

METHOD_NAMES: tuple[str, ...] = tuple(EXPLAINERS)
