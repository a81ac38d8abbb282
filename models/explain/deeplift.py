"""DeepLift (rescale rule) and DeepLiftShap, implemented with forward hooks, 2D and 3D.

DeepLift: Shrikumar, Greenside and Kundaje, "Learning Important Features Through Propagating Activation
Differences", ICML 2017 (arXiv:1704.02685). DeepLiftShap: Lundberg and Lee, "A Unified Approach to
Interpreting Model Predictions", NeurIPS 2017 (DeepLift averaged over a baseline distribution).

How: one forward pass over the concatenated batch [x; baseline] gives every layer its input and its
reference input. A forward hook on each nonlinearity call replaces the call's output by the same values
whose backward multiplies the incoming gradient by the rescale multiplier dy/dx = (y - y_ref) / (x - x_ref)
(the plain gradient where |x - x_ref| is tiny). Linear layers (convolutions, batch norm in eval mode,
average pooling, addition, concatenation) keep their gradient, which is their exact multiplier. Max
pooling (windowed or adaptive) routes the output difference to the argmax of the input and of the reference.
The gradient of the target logit with respect to x is then the DeepLift multiplier, and the attribution is
(x - baseline) * m, summed over channels. Completeness holds exactly (up to float error): sum = f(x) - f(baseline).

Unlike Captum 0.9 (pytorch/captum#378, #480, #1082), the hooks act per call, not per module, so a ReLU
module reused within a residual block is handled; in-place activations are switched to out-of-place while
the hooks are open (an in-place call overwrites the input that the multiplier needs). Functional
activations (`F.relu`) cannot be hooked and are treated as linear: use modules (see models/networks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn

from models.card import ModelCard
from models.explain.base import Explainer

# Elementwise nonlinearities whose multiplier is (y - y_ref) / (x - x_ref).
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
               nn.Softplus, nn.Hardtanh, nn.ReLU6, nn.Mish, nn.Hardswish, nn.Hardsigmoid)
# Max pools, windowed and adaptive (a global max-pool head is AdaptiveMaxPool): none of them is linear, so each
# gets the max-pool rule below; treated as linear, a global max-pool head broke summation-to-delta by ~0.5.
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
             nn.AdaptiveMaxPool3d)
_MaxPool = (nn.MaxPool1d | nn.MaxPool2d | nn.MaxPool3d | nn.AdaptiveMaxPool1d | nn.AdaptiveMaxPool2d
            | nn.AdaptiveMaxPool3d)
_MAX_POOL_FN = {nn.MaxPool1d: nn.functional.max_pool1d, nn.MaxPool2d: nn.functional.max_pool2d,
                nn.MaxPool3d: nn.functional.max_pool3d}
_ADAPTIVE_MAX_POOL_FN = {nn.AdaptiveMaxPool1d: nn.functional.adaptive_max_pool1d,
                         nn.AdaptiveMaxPool2d: nn.functional.adaptive_max_pool2d,
                         nn.AdaptiveMaxPool3d: nn.functional.adaptive_max_pool3d}
# Below this |x - x_ref| the multiplier falls back to the gradient at x (as in the paper and in Captum).
EPS = 1e-10


class _OverrideGradient(torch.autograd.Function):
    """Returns `value` unchanged; its backward gives `inputs` the gradient `backward(grad_output)`."""

    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, value: torch.Tensor, backward: Callable) -> torch.Tensor:
        ctx.backward_fn = backward
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        return ctx.backward_fn(grad_output), None, None


def _split(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = t.shape[0] // 2
    return t[:half], t[half:]


def _elementwise_multiplier(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """(2B, ...) rescale multiplier for both halves: Δy/Δx, or dy/dx at the input where |Δx| < EPS."""
    with torch.enable_grad():
        leaf = inputs.detach().requires_grad_(True)
        # module.forward, not module(...): calling the module would re-enter this hook.
        (gradient,) = torch.autograd.grad(module.forward(leaf).sum(), leaf)
    x, ref = _split(inputs.detach())
    y, y_ref = _split(output.detach())
    delta_in = (x - ref).repeat(2, *([1] * (x.dim() - 1)))
    delta_out = (y - y_ref).repeat(2, *([1] * (x.dim() - 1)))
    safe = torch.where(delta_in.abs() < EPS, torch.ones_like(delta_in), delta_in)
    return torch.where(delta_in.abs() < EPS, gradient, delta_out / safe)


def _pool_function(module: _MaxPool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The module's pooling as a function of its input alone (no indices), to differentiate again."""
    if isinstance(module, nn.AdaptiveMaxPool1d | nn.AdaptiveMaxPool2d | nn.AdaptiveMaxPool3d):
        return partial(_ADAPTIVE_MAX_POOL_FN[type(module)], output_size=module.output_size)
    return partial(_MAX_POOL_FN[type(module)], kernel_size=module.kernel_size, stride=module.stride,
                   padding=module.padding, dilation=module.dilation, ceil_mode=module.ceil_mode)


def _max_pool_backward(module: _MaxPool, inputs: torch.Tensor, output: torch.Tensor) -> Callable:
    """Backward of a max pool under the rescale rule.

    Δy = [max(y, y_ref) - y_ref] + [y - max(y, y_ref)]: the first (>= 0) part goes to the argmax of x, the
    second (<= 0) to the argmax of the reference; each input then gets multiplier contribution / Δx. Both
    parts vanish where their argmax has Δx = 0, so the split conserves Δy exactly.
    """
    pool = _pool_function(module)
    x, ref = _split(inputs.detach())
    y, y_ref = _split(output.detach())
    top = torch.maximum(y, y_ref)
    delta_in = x - ref

    def backward(grad_output: torch.Tensor) -> torch.Tensor:
        g, _ = _split(grad_output)
        with torch.enable_grad():
            # The adjoint of "pick the argmax" is "put back at the argmax": the gradient of the pool.
            xs = x.detach().requires_grad_(True)
            rs = ref.detach().requires_grad_(True)
            to_x, to_ref = torch.autograd.grad(
                [pool(xs), pool(rs)], [xs, rs], [g * (top - y_ref), g * (y - top)])
        contribution = to_x + to_ref
        safe = torch.where(delta_in.abs() < EPS, torch.ones_like(delta_in), delta_in)
        grad_x = torch.where(delta_in.abs() < EPS, torch.zeros_like(delta_in), contribution / safe)
        return torch.cat([grad_x, torch.zeros_like(grad_x)])

    return backward


def _rescale_hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
    x = inputs[0]
    if not isinstance(output, torch.Tensor) or x.shape[0] % 2:
        return None
    if isinstance(module, MAX_POOLS):
        return _OverrideGradient.apply(x, output, _max_pool_backward(module, x, output))
    multiplier = _elementwise_multiplier(module, x, output)
    return _OverrideGradient.apply(x, output, lambda grad: grad * multiplier)


@contextmanager
def rescale_hooks(model: nn.Module) -> Iterator[None]:
    """Open the rescale-rule hooks on every nonlinearity of `model` for forwards on [x; baseline].

    In-place activations are made out-of-place for the duration; hooks and flags are restored in `finally`.
    """
    handles = []
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    try:
        for module in inplace:
            # torch types Module.__setattr__ for tensors and submodules only; it sets a bool flag all the same.
            module.inplace = False  # type: ignore[assignment]
        for module in model.modules():
            if isinstance(module, ELEMENTWISE + MAX_POOLS):
                handles.append(module.register_forward_hook(_rescale_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in inplace:
            # torch types Module.__setattr__ for tensors and submodules only; it sets a bool flag all the same.
            module.inplace = True  # type: ignore[assignment]


def deeplift_attribution(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                         baseline: torch.Tensor) -> torch.Tensor:
    """(B, C, *s) per-element DeepLift attribution of the target logit against `baseline` (B, C, *s)."""
    batch = x.shape[0]
    with torch.enable_grad(), rescale_hooks(model):
        both = torch.cat([x.detach(), baseline.detach().to(x)]).requires_grad_(True)
        logits = model(both)[:batch]
        score = logits.gather(1, target.view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(score, both)
    return (x.detach() - baseline.to(x)) * gradient[:batch]


class DeepLift(Explainer):
    """DeepLift with the rescale rule (Shrikumar et al., ICML 2017), 2D and 3D.

    Equal to Captum's `DeepLift(multiply_by_inputs=True)` summed over channels on networks Captum handles
    (no reused or functional nonlinearities), and correct where Captum is not (reused ReLU modules).

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K) logits.
        baseline: the reference input: a number (broadcast; 0 is the dataset mean in normalised space)
            or a (C, *spatial) or (B, C, *spatial) tensor.
    """

    name = "deeplift"

    def __init__(self, model: nn.Module, baseline: float | torch.Tensor = 0.0) -> None:
        super().__init__(model)
        self.baseline = baseline

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, *spatial); target (B,) long. Returns: (B, 1, *spatial), summing to
        f(x)[target] - f(baseline)[target] per row."""
        self._check(x, target)
        baseline = torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device).expand_as(x)
        return deeplift_attribution(self.model, x, target, baseline).sum(dim=1, keepdim=True)


class DeepLiftShap(Explainer):
    """DeepLiftShap (Lundberg and Lee, NeurIPS 2017): DeepLift averaged over a baseline distribution.

    Approximates SHAP values with the distribution as background: sum of a row's map =
    f(x)[target] - mean_n f(baseline_n)[target].

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K) logits.
        baselines: (N, C, *spatial) background inputs (e.g. training images, normalised). When None,
            `n_baselines` draws of Gaussian noise of std `noise_std` around the dataset mean (0 in
            normalised space), seeded by `seed`, and the mean itself.
        batch_size: rows of x * baselines per forward (the forward is twice as large: [x; baseline]).
    """

    name = "deeplift_shap"

    def __init__(self, model: nn.Module, baselines: torch.Tensor | None = None, *, n_baselines: int = 8,
                 noise_std: float = 0.5, seed: int = 0, batch_size: int = 64) -> None:
        super().__init__(model)
        self.baselines = baselines
        self.n_baselines, self.noise_std, self.seed, self.batch_size = n_baselines, noise_std, seed, batch_size

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> DeepLiftShap:
        return cls(model)

    def _baselines(self, x: torch.Tensor) -> torch.Tensor:
        if self.baselines is not None:
            return self.baselines.to(x)
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.randn((self.n_baselines - 1, *x.shape[1:]), generator=generator) * self.noise_std
        return torch.cat([torch.zeros((1, *x.shape[1:])), noise]).to(x)

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, *spatial); target (B,) long. Returns: (B, 1, *spatial), the mean over baselines
        of DeepLift maps."""
        self._check(x, target)
        baselines = self._baselines(x)
        n = baselines.shape[0]
        # Row i * n + j pairs x[i] with baseline j, batched across rows and baselines.
        xs = x.repeat_interleave(n, dim=0)
        refs = baselines.repeat(x.shape[0], *([1] * (x.dim() - 1)))
        targets = target.repeat_interleave(n)
        maps = [deeplift_attribution(self.model, xs[i:i + self.batch_size], targets[i:i + self.batch_size],
                                     refs[i:i + self.batch_size]).sum(dim=1, keepdim=True)
                for i in range(0, xs.shape[0], self.batch_size)]
        return torch.cat(maps).view(x.shape[0], n, 1, *x.shape[2:]).mean(dim=1)
