"""The interface of every attribution method, and the hook plumbing they share.

Every explainer maps an input batch and one target class per row to a raw attribution map:
`explain(x: (B, C, *spatial), target: (B,) long) -> (B, 1, *spatial)`, for 2D (H, W) and 3D (D, H, W)
alike. Maps are raw (not normalised): normalising is for display only. Hooks are registered inside a
context manager and released in `finally`, also when the forward or backward pass raises.

Input-level methods (gradients, guided backprop, integrated gradients, ...) subclass `ChannelExplainer`:
they also give per-channel maps, `explain_channels(x, target) -> (B, C, *spatial)`, and `explain` is their
sum over channels. Layer methods (the CAM family) give one map per row and subclass `Explainer` directly.

`gradient_pass` is the one forward + backward that the gradient methods share: it returns the input
gradient and, if asked, a layer's activations and gradients, with an optional ReLU backward rule per row
(`ReLURule`: normal, guided backprop, deconvnet), so one batch can carry rows of several methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from models.card import ModelCard

_UPSAMPLE_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


class Explainer(ABC):
    """An attribution method for a classifier `model` (in eval mode, so rows do not interact).

    Subclasses set `name`, the stable snake_case name used in the registry, the database, URLs and
    templates, and implement `explain`.
    """

    name: ClassVar[str]

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> Explainer:
        """The explainer for `model`, configured from its card (e.g. the target layer)."""
        return cls(model)

    @abstractmethod
    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Attribution of each row's target logit.

        Args:
            x: (B, C, *spatial) input on the model's device.
            target: (B,) long, the class explained for each row.

        Returns:
            (B, 1, *spatial) float raw attribution, on x's device.
        """

    @staticmethod
    def _check(x: torch.Tensor, target: torch.Tensor) -> None:
        if x.dim() < 3:
            raise ValueError(f"x must be (B, C, *spatial), got shape {tuple(x.shape)}")
        if target.shape != (x.shape[0],) or target.dtype != torch.long:
            raise ValueError(f"target must be a (B,) = ({x.shape[0]},) long tensor, got {tuple(target.shape)} "
                             f"{target.dtype}")


@dataclass
class LayerRecord:
    """What `record_output` captured: the layer's output of the last forward pass."""

    output: Any = None


@contextmanager
def record_output(layer: nn.Module) -> Iterator[LayerRecord]:
    """Record `layer`'s forward output while the context is open; the hook is always removed."""
    record = LayerRecord()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        record.output = output

    handle = layer.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """`layer` itself, or the submodule at the dotted path (a card's `target_layer`)."""
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"the model has no layer {layer!r}") from None


def upsample(maps: torch.Tensor, spatial: list[int]) -> torch.Tensor:
    """(B, 1, *s) -> (B, 1, *spatial) by linear / bilinear / trilinear interpolation (align_corners=False)."""
    return nn.functional.interpolate(maps, size=tuple(spatial), mode=_UPSAMPLE_MODES[len(spatial)],
                                     align_corners=False)


class ChannelExplainer(Explainer):
    """An input-level method: per-channel maps, summed over channels by `explain`."""

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, *spatial); target (B,) long. Returns: (B, 1, *spatial), the channels' sum."""
        return self.explain_channels(x, target).sum(dim=1, keepdim=True)

    @abstractmethod
    def explain_channels(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-channel attribution: x (B, C, *spatial), target (B,) long -> (B, C, *spatial)."""


def target_score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The sum of each row's target logit: its gradient gives every row its own gradient, as rows do not
    interact in eval mode."""
    return logits.gather(1, target.view(-1, 1)).sum()


class ReLURule(IntEnum):
    """How a ReLU module passes the gradient g back, given its output y (Springenberg et al. 2015)."""

    NORMAL = 0  # g * [y > 0], the true gradient
    GUIDED = 1  # relu(g) * [y > 0], guided backpropagation
    DECONV = 2  # relu(g), deconvnet (Zeiler & Fergus 2014)


def _rule_runs(rules: torch.Tensor) -> list[tuple[slice, ReLURule]]:
    # (N,) rules -> runs of equal consecutive rules: a bundle's rows come in a few contiguous groups.
    values, counts = torch.unique_consecutive(rules.cpu(), return_counts=True)
    runs, start = [], 0
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        runs.append((slice(start, start + count), ReLURule(value)))
        start += count
    return runs


def _rule_hook(rules: list[tuple[slice, ReLURule]]) -> Any:
    """A post-hook for a ReLU's autograd node: turns the input gradient it computed, g * [y > 0], into each
    run of rows' rule, in place. In place is safe here: that gradient is the fresh output of the node's
    threshold_backward, seen by nothing else yet; a copy of the whole batch per ReLU would cost about as
    much as the ReLU's backward itself."""

    def hook(grad_inputs: tuple[torch.Tensor | None, ...], grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
        masked, grad = grad_inputs[0], grad_outputs[0]
        if masked is None or grad is None:
            return
        for rows, rule in rules:
            if rule == ReLURule.GUIDED:
                masked[rows].clamp_min_(0)
            elif rule == ReLURule.DECONV:
                torch.clamp_min(grad[rows], 0, out=masked[rows])

    return hook


@contextmanager
def relu_rules(model: nn.Module, rules: int | torch.Tensor) -> Iterator[None]:
    """Make every `nn.ReLU` module of `model` pass gradients back by `rules` (a `ReLURule` for all rows, or
    an (N,) long tensor of them, one per row of the batch) while the context is open.

    The ReLU runs as usual in the forward; a hook on its autograd node then turns the true input gradient
    g * [y > 0] into the rule's, one op per run of rows with the same rule: normal rows cost nothing more
    and are bit-identical to a plain backward (the node is autograd's own). Only ReLU modules are seen: a
    functional `F.relu` keeps its normal gradient, silently. In-place ReLUs are made out-of-place meanwhile,
    so that each output's node is the ReLU's. Hooks and `inplace` are restored in `finally`. Raises
    ValueError if the model has no ReLU module.
    """
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError("the model has no nn.ReLU module: a ReLU backward rule cannot apply")
    runs = _rule_runs(rules) if isinstance(rules, torch.Tensor) else [(slice(None), ReLURule(rules))]
    runs = [(rows, rule) for rows, rule in runs if rule != ReLURule.NORMAL]
    if not runs:
        yield  # the plain gradient: no hooks, no extra work
        return
    node_hook = _rule_hook(runs)

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if output.grad_fn is None:
            return
        if output.grad_fn.name() != "ReluBackward0":
            raise RuntimeError(f"{module.__class__.__name__} output did not come from torch.relu: its backward "
                               f"is {output.grad_fn.name()}, the ReLU rules cannot apply")
        output.grad_fn.register_hook(node_hook)

    inplace = [m.inplace for m in relus]
    handles = []
    try:
        for module in relus:
            module.inplace = False
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, was_inplace in zip(relus, inplace, strict=True):
            module.inplace = was_inplace


@dataclass
class Pass:
    """What `gradient_pass` computed, all detached: logits (N, K); input_grad (N, C, *spatial) or None;
    activations and layer_grad (N, K_l, *s) of the layer, or None."""

    logits: torch.Tensor
    input_grad: torch.Tensor | None = None
    activations: torch.Tensor | None = None
    layer_grad: torch.Tensor | None = None

    def rows(self, part: slice) -> Pass:
        """The same for the rows in `part` (views, no copies)."""
        def cut(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value[part]

        return Pass(self.logits[part], cut(self.input_grad), cut(self.activations), cut(self.layer_grad))


def gradient_pass(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, layer: nn.Module | None = None,
                  input_grad: bool = True, rules: int | torch.Tensor | None = None) -> Pass:
    """One forward + backward of the rows' target logits.

    Args:
        model: classifier in eval mode, (N, C, *spatial) -> (N, K).
        x: (N, C, *spatial) rows; target: (N,) long.
        layer: whose output's activations and gradient to return, if any.
        input_grad: whether to return d logit / d x (False stops the backward at `layer`: cheaper).
        rules: a `ReLURule` (or (N,) long tensor of them) for the ReLU modules' backward; None = normal.

    Returns:
        `Pass`, detached. The parameters' `.grad` are left untouched (autograd.grad, not backward).
    """
    if not input_grad and layer is None:
        raise ValueError("gradient_pass needs input_grad or a layer")
    with torch.enable_grad(), ExitStack() as stack:
        if rules is not None:
            stack.enter_context(relu_rules(model, rules))
        record = stack.enter_context(record_output(layer)) if layer is not None else None
        # The input requires grad so layer outputs are in the graph even when the weights are frozen.
        rows = x.detach().requires_grad_(True)
        logits = model(rows)
        wrt = [rows] if input_grad else []
        if record is not None:
            if not isinstance(record.output, torch.Tensor):
                raise ValueError(f"the layer {layer.__class__.__name__} did not output one tensor")
            wrt.append(record.output)
        grads = torch.autograd.grad(target_score(logits, target), wrt)
    result = Pass(logits=logits.detach())
    if input_grad:
        result.input_grad = grads[0]
    if record is not None:
        result.activations, result.layer_grad = record.output.detach(), grads[-1]
    return result


def spatial_sum(maps: torch.Tensor) -> torch.Tensor:
    """(N, K, *s) -> (N, K, 1, ...): sums over the spatial dimensions, keeping them for broadcasting."""
    return maps.sum(dim=tuple(range(2, maps.dim())), keepdim=True)
