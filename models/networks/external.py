"""Networks from other libraries, built by `models.registry.build_from_card` when a card's
`architecture.name` is one of `EXTERNAL`; the libraries are optional extras, imported only here and only then.

- "monai_bundle": the network of a MONAI bundle (MONAI Model Zoo layout: `configs/metadata.json`,
  `configs/inference.json` or .yaml, `models/model.pt`) kept in a subfolder of the model folder, built by
  `monai.bundle.ConfigParser` from the config item that defines it (`network_def` in the zoo's bundles).
- "timm": `timm.create_model` by name, never pretrained (the card's weights are loaded instead).

A bundle's config is code as much as a pickle is: `$` items are Python expressions MONAI evaluates, and
`_target_` may name any callable. Only the items the network needs are parsed, and only when they are
literals, references to other such items, and `_target_`s naming `torch.nn.Module` classes of `monai.networks`
or `torch.nn`; anything else is refused before MONAI sees it.
"""

from __future__ import annotations

import functools
import pydoc
from pathlib import Path
from typing import Any

from torch import nn

from models.card import CardError

EXTERNAL = ("monai_bundle", "timm")
_SAFE_MODULES = ("monai.networks.", "torch.nn.")
_PLAIN_KEYS = {"_target_", "_desc_"}
_REF, _SEPARATORS = "@", ("::", "#")


def build_external(
    name: str, params: dict[str, Any], *, folder: Path, num_classes: int, in_channels: int
) -> nn.Module:
    """The `EXTERNAL` network `name` built with the card's `params`; `folder` is the model folder (a bundle
    lives inside it), `num_classes` and `in_channels` the card's labels and input channels (for timm).

    Raises:
        CardError: the library is not installed, the parameters do not fit, or the bundle config is refused.
    """
    try:
        if name == "monai_bundle":
            return monai_bundle_network(folder, **params)
        if name == "timm":
            return timm_network(num_classes=num_classes, in_chans=in_channels, **params)
    except TypeError as exc:
        raise CardError(f"architecture {name!r} cannot be built with {params}: {exc}") from exc
    raise CardError(f"unknown external architecture {name!r}; known: {list(EXTERNAL)}")


def monai_bundle_network(
    folder: Path, *, bundle: str, config: str = "configs/inference.json", network: str = "network_def"
) -> nn.Module:
    """The network defined by item `network` of `folder/bundle/config`, freshly initialised."""
    try:
        from monai.bundle import ConfigParser
    except ImportError as exc:
        raise CardError("a MONAI bundle needs MONAI: pip install 'lumen[monai]'") from exc
    path = Path(folder) / bundle / config
    if not path.is_file():
        raise CardError(f"the MONAI bundle has no config {bundle}/{config}")
    try:
        content = ConfigParser.load_config_file(path)
    except (OSError, ValueError) as exc:
        raise CardError(f"{bundle}/{config} is not a readable bundle config: {exc}") from exc
    parser = ConfigParser(_network_items(content, network, path.name))
    built = parser.get_parsed_content(network)
    if not isinstance(built, nn.Module):
        raise CardError(f"{bundle}/{config}: item {network!r} builds a {type(built).__name__}, not a torch network")
    return built


def timm_network(*, model_name: str, num_classes: int, in_chans: int, **params: Any) -> nn.Module:
    """`timm.create_model(model_name, pretrained=False, ...)`: Lumen never downloads weights."""
    try:
        import timm
    except ImportError as exc:
        raise CardError("a timm architecture needs timm: pip install 'lumen[timm]'") from exc
    model: nn.Module = timm.create_model(
        model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **params
    )
    return model


def _network_items(content: dict[str, Any], network: str, config_name: str) -> dict[str, Any]:
    """The top-level items of the config that `network` needs (itself and what it refers to), each checked
    by `_check_literal`; `_target_`s are replaced by the full name of the class they were checked as."""
    needed: dict[str, Any] = {}
    pending = [network]
    while pending:
        key = pending.pop()
        if key in needed:
            continue
        if key not in content:
            raise CardError(f"{config_name} has no item {key!r} (the network's definition or a reference of it)")
        needed[key], references = _check_literal(content[key], key)
        pending.extend(references)
    return needed


def _check_literal(value: Any, where: str) -> tuple[Any, list[str]]:
    """`value` with each `_target_` resolved, and the top-level ids it refers to; CardError for code."""
    if isinstance(value, dict):
        checked, references = {}, []
        for key, item in value.items():
            if str(key).startswith("_") and key not in _PLAIN_KEYS:
                raise CardError(f"bundle item {where!r}: key {key!r} is not allowed in a network definition")
            if key == "_target_":
                checked[key] = _network_class(item, where)
                continue
            checked[key], found = _check_literal(item, f"{where}::{key}")
            references += found
        return checked, references
    if isinstance(value, list):
        pairs = [_check_literal(item, f"{where}::{i}") for i, item in enumerate(value)]
        return [item for item, _ in pairs], [ref for _, found in pairs for ref in found]
    if isinstance(value, str) and value[:1] in ("$", "%"):
        raise CardError(
            f"bundle item {where!r} is a Python expression or macro ({value[:40]!r}); Lumen builds bundle networks "
            "from literal configs only, as running an uploaded config would run its code"
        )
    if isinstance(value, str) and value.startswith(_REF):
        target = value[len(_REF):]
        if not target or target.startswith(_SEPARATORS):
            raise CardError(f"bundle item {where!r}: relative reference {value!r} is not supported")
        for separator in _SEPARATORS:
            target = target.split(separator)[0]
        return value, [target]
    return value, []


@functools.cache
def _locator() -> Any:
    # MONAI's table of its own class names (DenseNet121 -> monai.networks.nets.densenet); slow to build, kept.
    from monai.bundle.config_item import ComponentLocator

    return ComponentLocator()


def _network_class(target: Any, where: str) -> str:
    """The full name of the `torch.nn.Module` class that `_target_` names, as MONAI would resolve it."""
    if not isinstance(target, str):
        raise CardError(f"bundle item {where!r}: _target_ must be a class name, got {type(target).__name__}")
    module = _locator().get_component_module_name(target)
    module = module[0] if isinstance(module, list) else module
    name = f"{module}.{target}" if module else target
    found = pydoc.locate(name)
    if not (isinstance(found, type) and issubclass(found, nn.Module) and found.__module__.startswith(_SAFE_MODULES)):
        raise CardError(
            f"bundle item {where!r}: _target_ {target!r} is not a network class of monai.networks or torch.nn"
        )
    return f"{found.__module__}.{found.__qualname__}"
