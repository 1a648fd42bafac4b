"""Model registry: `build(name, num_classes, in_channels, image_size)` is the only way a stage gets a network.

Builders wrap torchvision architectures (no pretrained weights: nothing is downloaded) and adapt the stem:
any channel count, and for small inputs (MedMNIST's 28–64 px) no early stride or max-pool, which would
collapse a 28 px image to a 7 px feature map before the first residual block.
Registering a new architecture is one decorated function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm

from lib.io import atomic_path

SMALL_INPUT = 96  # below this size (px) the stem keeps full resolution

_REGISTRY: dict[str, Callable[[int, int, bool], nn.Module]] = {}


def register(name: str):
    def add(builder: Callable[[int, int, bool], nn.Module]):
        _REGISTRY[name] = builder
        return builder
    return add


def available() -> list[str]:
    return sorted(_REGISTRY)


@dataclass(frozen=True)
class ModelSpec:
    """What it takes to rebuild a network: recorded in every checkpoint."""
    arch: str
    num_classes: int
    in_channels: int
    image_size: int


def build(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names are {', '.join(available())}")
    if num_classes < 2:
        raise ValueError(f"num_classes: got {num_classes}; a classifier needs at least 2 classes")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels: got {in_channels}; expected 1 (grayscale) or 3 (RGB)")
    return _REGISTRY[name](num_classes, in_channels, image_size < SMALL_INPUT)


def build_from_spec(spec: ModelSpec) -> nn.Module:
    return build(spec.arch, spec.num_classes, spec.in_channels, spec.image_size)


def _new_stem(conv: nn.Conv2d, in_channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, conv.out_channels, kernel_size=3, stride=stride, padding=1,
                     bias=conv.bias is not None)


def _resnet(builder: Callable[..., tvm.ResNet]):
    def make(num_classes: int, in_channels: int, small: bool) -> nn.Module:
        model = builder(weights=None, num_classes=num_classes)
        if small:
            model.conv1 = _new_stem(model.conv1, in_channels, stride=1)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return model
    return make


def _mobilenet(builder: Callable[..., nn.Module]):
    def make(num_classes: int, in_channels: int, small: bool) -> nn.Module:
        model = builder(weights=None, num_classes=num_classes)
        stem = model.features[0][0]
        model.features[0][0] = _new_stem(stem, in_channels, stride=1 if small else 2)
        return model
    return make


register("resnet18")(_resnet(tvm.resnet18))
register("resnet34")(_resnet(tvm.resnet34))
register("resnet50")(_resnet(tvm.resnet50))
register("mobilenetv2")(_mobilenet(tvm.mobilenet_v2))
register("mobilenetv3_small")(_mobilenet(tvm.mobilenet_v3_small))
register("mobilenetv3_large")(_mobilenet(tvm.mobilenet_v3_large))


# Layer attributes that pruning changes. Recording them (plain ints) beside the state dict lets a pruned
# network be rebuilt from its architecture name alone, so checkpoints load with `weights_only=True`.
_SHAPE_ATTRS = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm2d: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
}


def layer_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    return {name: {attr: getattr(module, attr) for attr in attrs}
            for name, module in model.named_modules()
            for kind, attrs in _SHAPE_ATTRS.items() if isinstance(module, kind)}


def save_checkpoint(model: nn.Module, spec: ModelSpec, path: str | Path) -> None:
    """Save spec, layer shapes and weights: tensors and plain values only."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"spec": asdict(spec), "layers": layer_shapes(model), "state_dict": state}, tmp)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the architecture, reshape its layers as recorded (pruned or not), load the weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found: run the stage that writes it (dvc repro)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        spec = ModelSpec(**ckpt["spec"])
        layers, state = ckpt["layers"], ckpt["state_dict"]
    except Exception as err:
        raise ValueError(f"{path} is not a checkpoint written by this project: {err}") from err
    model = build_from_spec(spec)
    expected = set(model.state_dict())
    if set(state) != expected:
        raise ValueError(f"{path}: weights do not match architecture {spec.arch!r} "
                         f"(differing keys: {sorted(set(state) ^ expected)[:5]})")
    for name, attrs in layers.items():
        for attr, value in attrs.items():
            setattr(model.get_submodule(name), attr, value)
    for key, tensor in state.items():
        owner, _, attr = key.rpartition(".")
        module = model.get_submodule(owner)
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(tensor)
        else:
            module._buffers[attr] = tensor
    return model.to(device).eval(), spec
