"""Model registry: a plain dict of name → (family, default config fields), built by :func:`build`.

A family is a (config dataclass, model class) pair; checkpoints store the family and the full config,
so :func:`from_config` rebuilds any saved model without importing code from the checkpoint.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from hahrobust.errors import HahrobustError
from hahrobust.models.base import HahrobustModel, InputNormalization
from hahrobust.models.hebbnet import HebbNet, HebbNetConfig
from hahrobust.models.softhebb import SoftHebb, SoftHebbConfig
from hahrobust.models.sparse_coding import SparseCodingConfig, SparseCodingNet
from hahrobust.models.vgg import PAPER_ALPHA, VGG, VGGConfig

FAMILIES: dict[str, tuple[type, type[HahrobustModel]]] = {
    "vgg": (VGGConfig, VGG), "hebbnet": (HebbNetConfig, HebbNet), "softhebb": (SoftHebbConfig, SoftHebb),
    "sparse-coding": (SparseCodingConfig, SparseCodingNet),
}


class ModelName(str, Enum):
    VGG11 = "vgg11"
    VGG13 = "vgg13"
    VGG16 = "vgg16"
    VGG19 = "vgg19"
    HAH_VGG11 = "hah-vgg11"
    HAH_VGG13 = "hah-vgg13"
    HAH_VGG16 = "hah-vgg16"
    HAH_VGG19 = "hah-vgg19"
    KWTA_VGG16 = "kwta-vgg16"  # Xiao et al. 2020: k-winners-take-all in place of every ReLU (γ = 0.1)
    LWTA_VGG16 = "lwta-vgg16"  # Panousis et al. 2021 (deterministic): local winner-take-all blocks of 2 channels
    HEBB_NET = "hebb-net"  # Amato et al. 2019: per-layer Hebbian / gradient / random (``layers="HHGGGG"``)
    SOFTHEBB = "softhebb"  # Journé et al. 2023: soft-WTA Hebbian convolutions without labels, a linear readout
    SPARSE_CODING = "sparse-coding-vgg16"  # Bakiskan et al. 2021: a sparse ternary patch code in front of a VGG-16


# Baselines have no HaH block (implicit weight norm everywhere). HaH variants follow the paper: the
# first 6 conv blocks of VGG-13/16/19; VGG-11 has only 8 convs, so its first 4.
REGISTRY: dict[ModelName, tuple[str, dict[str, Any]]] = {
    ModelName.VGG11: ("vgg", {"arch": "vgg11", "hah_blocks": 0}),
    ModelName.VGG13: ("vgg", {"arch": "vgg13", "hah_blocks": 0}),
    ModelName.VGG16: ("vgg", {"arch": "vgg16", "hah_blocks": 0}),
    ModelName.VGG19: ("vgg", {"arch": "vgg19", "hah_blocks": 0}),
    ModelName.HAH_VGG11: ("vgg", {"arch": "vgg11", "hah_blocks": 4}),
    ModelName.HAH_VGG13: ("vgg", {"arch": "vgg13", "hah_blocks": 6}),
    ModelName.HAH_VGG16: ("vgg", {"arch": "vgg16", "hah_blocks": 6}),
    ModelName.HAH_VGG19: ("vgg", {"arch": "vgg19", "hah_blocks": 6}),
    ModelName.KWTA_VGG16: ("vgg", {"arch": "vgg16", "hah_blocks": 0, "activation": "kwta"}),
    ModelName.LWTA_VGG16: ("vgg", {"arch": "vgg16", "hah_blocks": 0, "activation": "lwta"}),
    ModelName.HEBB_NET: ("hebbnet", {}),
    ModelName.SOFTHEBB: ("softhebb", {}),
    ModelName.SPARSE_CODING: ("sparse-coding", {}),
}


def model_names() -> list[str]:
    return [name.value for name in REGISTRY]


def resolve_config(name: str, **overrides: Any) -> tuple[str, Any]:
    """(family, config) for a registered name with field overrides; unknown names or fields are errors."""
    try:
        key = ModelName(name)
    except ValueError:
        raise HahrobustError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}") from None
    family, defaults = REGISTRY[key]
    return family, make_config(family, {**defaults, **overrides})


def make_config(family: str, fields: dict[str, Any]) -> Any:
    if family not in FAMILIES:
        raise HahrobustError(f"unknown model family {family!r}")
    config_cls = FAMILIES[family][0]
    known = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise HahrobustError(f"unknown {family} model setting(s): {', '.join(unknown)}")
    # JSON turns tuples into lists: restore them so configs compare equal after a round trip.
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return config_cls(**fields)


def from_config(family: str, config: Any) -> HahrobustModel:
    try:
        return FAMILIES[family][1](config)
    except ValueError as exc:
        raise HahrobustError(f"invalid model configuration: {exc}") from None


def build(name: str, **overrides: Any) -> HahrobustModel:
    """Build a registered model, e.g. ``build("hah-vgg16", width=0.25)``. ``model.config`` records it all."""
    return from_config(*resolve_config(name, **overrides))


__all__ = [
    "FAMILIES", "REGISTRY", "PAPER_ALPHA", "HahrobustModel", "HebbNet", "HebbNetConfig", "InputNormalization",
    "ModelName", "SoftHebb", "SoftHebbConfig", "SparseCodingConfig", "SparseCodingNet", "VGG",
    "VGGConfig", "build", "from_config", "make_config", "model_names", "resolve_config",
]
