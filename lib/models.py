"""Model registry: `build(name, num_classes, in_channels, image_size, …)` is how a stage gets a network.

Builders wrap torchvision architectures (random weights; `lib.weights` loads others) and adapt the stem:
any channel count, and for small inputs (MedMNIST's 28–64 px) no early stride or max-pool, which would
collapse a 28 px image to a 7 px feature map before the first block.
Registering a new architecture is one decorated function, which also declares the architecture's width
multipliers and whether it can be a student (pruned, converted to TFLite and quantized to INT8).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm

from lib.ensemble import ENSEMBLE_JOIN, Ensemble, ensemble_members
from lib.errors import UserError
from lib.io import atomic_path

SMALL_INPUT = 96  # below this size (px) the stem keeps full resolution

Builder = Callable[[int, int, bool, float], nn.Module]  # (num_classes, in_channels, small, width) → model


@dataclass(frozen=True)
class Architecture:
    """A registered network and what the compression chain needs to know about it."""
    builder: Builder
    widths: tuple[float, ...] = (1.0,)
    teacher_only: str = ""  # why it cannot be a student; empty when it can
    last_stride_one: bool = False  # its last downsampling can run at stride 1 (`keep_last_resolution`)


_REGISTRY: dict[str, Architecture] = {}


def register(name: str, *, widths: tuple[float, ...] = (1.0,), teacher_only: str = "",
             last_stride_one: bool = False):
    def add(builder: Builder) -> Builder:
        _REGISTRY[name] = Architecture(builder, widths, teacher_only, last_stride_one)
        return builder
    return add


def available() -> list[str]:
    return sorted(_REGISTRY)


def architecture(name: str) -> Architecture:
    """The registry entry of `name` (`timm/<name>`: see `lib.timm_models`); an unknown name lists the valid ones."""
    if name.startswith("timm/"):
        from lib.timm_models import timm_architecture  # imports timm only when a timm model is asked for
        return timm_architecture(name)
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; valid names are {', '.join(available())}, "
                        "or timm/<name> for a model of timm")
    return _REGISTRY[name]


def check_width(name: str, width: float, key: str = "width") -> None:
    widths = architecture(name).widths
    if width not in widths:
        supported = ", ".join(map(str, widths)) if len(widths) > 1 else "only 1.0 (no width multiplier)"
        raise UserError(f"{key}: got {width} for {name}; it supports {supported}")


def check_last_stride(name: str, last_stride: int, key: str = "last_stride") -> None:
    if last_stride != 2 and not architecture(name).last_stride_one:
        able = ", ".join(n for n in available() if _REGISTRY[n].last_stride_one)
        raise UserError(f"{key}: got {last_stride} for {name}; only {able} can keep the resolution of their "
                        "last downsampling block (1); use 2 for the others")


def check_student(name: str, width: float = 1.0, last_stride: int = 2) -> None:
    """Raise `UserError` unless `name` at `width` can go through pruning, TFLite conversion and INT8."""
    reason = architecture(name).teacher_only
    if reason:
        raise UserError(f"student: {name} cannot be a student: {reason}; use it as a teacher only")
    check_width(name, width, key="student_width")
    check_last_stride(name, last_stride, key="student_last_stride")


def check_params(params) -> None:
    """Refuse, before any work, a model the registry does not know or a student the chain cannot compress.

    `params`: a `lib.config.Params` (not imported here, so the registry and the params stay independent).
    """
    for role, name in [("teacher", name) for name in params.teachers] + [("student", params.student)]:
        try:
            architecture(name)
        except UserError as err:
            raise UserError(f"{role}: {err}") from None
    check_student(params.student, params.student_width, params.student_last_stride)


@dataclass(frozen=True)
class ModelSpec:
    """What it takes to rebuild a network: recorded in every checkpoint."""
    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    width: float = 1.0  # absent from checkpoints written before width multipliers existed
    last_stride: int = 2  # 1: `keep_last_resolution`; absent from checkpoints written before it existed


def build(name: str, num_classes: int, in_channels: int, image_size: int, width: float = 1.0,
          last_stride: int = 2) -> nn.Module:
    entry = architecture(name)
    check_width(name, width)
    check_last_stride(name, last_stride)
    if num_classes < 2:
        raise UserError(f"num_classes: got {num_classes}; a classifier needs at least 2 classes")
    if in_channels not in (1, 3):
        raise UserError(f"in_channels: got {in_channels}; expected 1 (grayscale) or 3 (RGB)")
    model = entry.builder(num_classes, in_channels, image_size < SMALL_INPUT, width)
    if last_stride == 1:
        keep_last_resolution(model)
    _standard_batch_norm_momentum(model)
    return model


def build_from_spec(spec: ModelSpec) -> nn.Module:
    """The network of `spec`; an ensemble's architecture name (see `ensemble_arch`) builds an `Ensemble`."""
    if ENSEMBLE_JOIN in spec.arch:
        return Ensemble([build(name, spec.num_classes, spec.in_channels, spec.image_size, spec.width)
                         for name in ensemble_members(spec.arch)])
    return build(spec.arch, spec.num_classes, spec.in_channels, spec.image_size, spec.width, spec.last_stride)


def keep_last_resolution(model: nn.Module) -> None:
    """Run the last stride-2 depthwise convolution at stride 1: the last blocks see twice the resolution.

    On a 28 px image MobileNetV2's last map is 2×2 (an output stride of 16 after the small-input stem), where
    the ResNet teacher's is 4×4; at stride 1 the student's is 4×4 too, with the same parameters, for about
    1.85× the MACs. The block had no residual connection (it changes the channel count), so none appears.
    """
    downsampling = [m for m in model.modules()
                    if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 and m.stride == (2, 2)]
    downsampling[-1].stride = (1, 1)


def _standard_batch_norm_momentum(model: nn.Module) -> None:
    """Batch-norm running statistics that follow a training of a few epochs (PyTorch's momentum, 0.1).

    torchvision's MobileNetV3 (0.01) and MNASNet (0.0003) keep the slow averages of TensorFlow's
    ImageNet recipes. After a few epochs their running statistics are still near their initial values,
    so in eval mode the logits barely vary between images (spread ~1e-5): AUC survives in float, but
    INT8 rounds every output to the same value (constant prediction, AUC 0.5).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1


def _adapt_stem(model: nn.Module, path: str, in_channels: int, small: bool) -> None:
    """Replace the first convolution at `path`: 3×3 stride 1 for small inputs, else `in_channels` only."""
    conv = model.get_submodule(path)
    if small:
        new = nn.Conv2d(in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)
    elif in_channels != conv.in_channels:
        new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        bias=conv.bias is not None)
    else:
        return
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)


def _drop_pool(model: nn.Module, path: str, small: bool) -> None:
    """Remove an early max-pool for small inputs."""
    if small:
        parent, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Identity())


def _resnet(constructor: Callable[..., tvm.ResNet]) -> Builder:
    def make(num_classes: int, in_channels: int, small: bool, width: float) -> nn.Module:
        model = constructor(weights=None, num_classes=num_classes)
        _adapt_stem(model, "conv1", in_channels, small)
        _drop_pool(model, "maxpool", small)
        return model
    return make


register("resnet18")(_resnet(tvm.resnet18))
register("resnet34")(_resnet(tvm.resnet34))
register("resnet50")(_resnet(tvm.resnet50))


def _vgg(constructor: Callable[..., tvm.VGG], config: str) -> Builder:
    """VGG; for small inputs CIFAR-style: four max-pools and a global-average-pool + linear head.

    Five pools would shrink a 28 px image below one pixel, and torchvision's 25088×4096 head (≈120 M
    parameters) would classify a 1 px feature map copied 49 times by its 7×7 adaptive pool.
    """
    def make(num_classes: int, in_channels: int, small: bool, width: float) -> nn.Module:
        if not small:
            model = constructor(weights=None, num_classes=num_classes)
            _adapt_stem(model, "features.0", in_channels, False)
            return model
        features = tvm.vgg.make_layers(tvm.vgg.cfgs[config][:-1], batch_norm=True)  # without the last pool
        _adapt_stem(features, "0", in_channels, False)
        return nn.Sequential(OrderedDict(features=features, avgpool=nn.AdaptiveAvgPool2d(1),
                                         flatten=nn.Flatten(), classifier=nn.Linear(512, num_classes)))
    return make


_VGG_TFLITE = ("onnx2tf's float TFLite of the pruned network does not reproduce its ONNX model "
               "(top-1 agreement 62-81 %, |Δprob| up to 0.8; the unpruned network converts exactly)")
register("vgg16_bn", teacher_only=_VGG_TFLITE)(_vgg(tvm.vgg16_bn, "D"))
register("vgg19_bn", teacher_only=_VGG_TFLITE)(_vgg(tvm.vgg19_bn, "E"))


@register("densenet121")
def _densenet121(num_classes: int, in_channels: int, small: bool, width: float) -> nn.Module:
    model = tvm.densenet121(weights=None, num_classes=num_classes)
    _adapt_stem(model, "features.conv0", in_channels, small)
    _drop_pool(model, "features.pool0", small)
    return model


def _first_conv(constructor: Callable[..., nn.Module], stem: str, **options) -> Builder:
    """Architectures whose only early downsampling is the stem convolution at `stem`."""
    def make(num_classes: int, in_channels: int, small: bool, width: float) -> nn.Module:
        extra = {"width_mult": width} if width != 1.0 else {}
        model = constructor(weights=None, num_classes=num_classes, **options, **extra)
        _adapt_stem(model, stem, in_channels, small)
        return model
    return make


register("efficientnet_b0")(_first_conv(tvm.efficientnet_b0, "features.0.0"))
_B3_INT8 = ("its pruned network's INT8 TFLite does not follow the float model "
            "(correlation 0.07, top-1 agreement 62 % in the chain test)")
register("efficientnet_b3", teacher_only=_B3_INT8)(_first_conv(tvm.efficientnet_b3, "features.0.0"))
register("mobilenetv2", widths=(0.25, 0.35, 0.5, 0.75, 1.0),
         last_stride_one=True)(_first_conv(tvm.mobilenet_v2, "features.0.0"))
register("mobilenetv3_small", widths=(0.25, 0.5, 0.75, 1.0),
         last_stride_one=True)(_first_conv(tvm.mobilenet_v3_small, "features.0.0"))
register("mobilenetv3_large", widths=(0.25, 0.5, 0.75, 1.0),
         last_stride_one=True)(_first_conv(tvm.mobilenet_v3_large, "features.0.0"))
register("regnet_y_400mf")(_first_conv(tvm.regnet_y_400mf, "stem.0"))

_SHUFFLENET = {0.5: tvm.shufflenet_v2_x0_5, 1.0: tvm.shufflenet_v2_x1_0,
               1.5: tvm.shufflenet_v2_x1_5, 2.0: tvm.shufflenet_v2_x2_0}
_MNASNET = {0.5: tvm.mnasnet0_5, 0.75: tvm.mnasnet0_75, 1.0: tvm.mnasnet1_0, 1.3: tvm.mnasnet1_3}


@register("shufflenet_v2", widths=tuple(_SHUFFLENET),
          teacher_only="torch-pruning cannot trace ShuffleNetV2's channel shuffle (the reshape-transpose "
                       "that interleaves its two branches fails in its dependency graph)")
def _shufflenet_v2(num_classes: int, in_channels: int, small: bool, width: float) -> nn.Module:
    model = _SHUFFLENET[width](weights=None, num_classes=num_classes)
    _adapt_stem(model, "conv1.0", in_channels, small)
    _drop_pool(model, "maxpool", small)
    return model


@register("mnasnet", widths=tuple(_MNASNET))
def _mnasnet(num_classes: int, in_channels: int, small: bool, width: float) -> nn.Module:
    model = _MNASNET[width](weights=None, num_classes=num_classes)
    _adapt_stem(model, "layers.0", in_channels, small)
    return model


@register("squeezenet1_1")
def _squeezenet1_1(num_classes: int, in_channels: int, small: bool, width: float) -> nn.Module:
    model = tvm.squeezenet1_1(weights=None, num_classes=num_classes)
    _adapt_stem(model, "features.0", in_channels, small)
    return model


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
        raise UserError(f"model file {path} not found: run the stage that writes it (dvc repro)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        spec = ModelSpec(**ckpt["spec"])
        layers, state = ckpt["layers"], ckpt["state_dict"]
    except Exception as err:
        raise UserError(f"{path} is not a checkpoint written by this project: {err}") from err
    model = build_from_spec(spec)
    expected = set(model.state_dict())
    if set(state) != expected:
        raise UserError(f"{path}: weights do not match architecture {spec.arch!r} "
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
