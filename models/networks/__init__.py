"""Architectures in plain torch, by name: `build_network(card.architecture.name, **card.architecture.params)`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from models.networks.densenet import DenseNet
from models.networks.resnet import ResNet

NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "densenet": DenseNet,
    "resnet": ResNet,
}


def build_network(name: str, **params: object) -> nn.Module:
    """A freshly initialised network of the registered `name`, built with `params` (keyword arguments).

    Raises ValueError for an unknown name or parameters the network does not take.
    """
    try:
        factory = NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; known: {sorted(NETWORKS)}") from None
    try:
        return factory(**params)
    except TypeError as exc:
        raise ValueError(f"network {name!r} cannot be built with {params}: {exc}") from exc
