"""timm as a second model registry: `timm/<name>` is `timm.create_model(<name>)`, any model timm lists.

`in_chans` adapts timm's stem to 1 or 3 channels. For small inputs (below `lib.models.SMALL_INPUT`) every
convolution that reads the image gets stride 1, so a 28 px image ends at 2×2 after the usual stride 16 of
the rest of the network (kept at stride 32 it would end at 1×1: that runs, but little is left to see).
The filters keep their shape, so pretrained ones still load into the stride-1 stem.
Students are an allow-list: a timm model becomes one only once it has been through pruning, ONNX, TFLite
and INT8 with the chain's gates (tests/test_registry_chain.py); every other timm model is teacher-only.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from lib.errors import UserError
from lib.models import Architecture

PREFIX = "timm/"
PROBE_SIZE = 64  # px of the blank image that finds the convolutions reading the input

# Passed the whole chain (prune 0.5 → ONNX → onnx2tf float32 → INT8) at 28 px, 1 channel, with the gates
# of tests/test_registry_chain.py. Any other timm model is teacher-only: untested, or for the reason below.
STUDENTS = frozenset({"efficientnet_lite0", "ghostnet_100", "mnasnet_small", "mobilenetv4_conv_small",
                      "repvgg_a0", "xception41"})
TEACHER_ONLY = {
    "nasnetalarge": "not run through the compression chain: with 85 M parameters it is a teacher's size "
                    "(halving its channels still leaves about 21 M)",
}
UNTESTED = "it is not on the list of timm students that passed the compression chain ({students})"


def is_timm(name: str) -> bool:
    return name.startswith(PREFIX)


def timm_name(name: str) -> str:
    """`timm/<name>` → `<name>`, the name timm knows."""
    return name[len(PREFIX):]


def timm_architecture(name: str) -> Architecture:
    """The registry entry of `timm/<name>`; an unknown name says how to list valid ones."""
    import timm

    model_name = timm_name(name)
    if not timm.is_model(model_name):
        raise UserError(f"unknown timm model {model_name!r} ({name}); list valid names with "
                        f"python -c \"import timm; print(timm.list_models('*{model_name[:6]}*'))\"")
    return Architecture(partial(build_timm, model_name), (1.0,), student_refusal(model_name))


def student_refusal(model_name: str) -> str:
    """Why `model_name` cannot be a student; empty when it is on the allow-list."""
    if model_name in STUDENTS:
        return ""
    students = ", ".join(PREFIX + name for name in sorted(STUDENTS)) or "none yet"
    return TEACHER_ONLY.get(model_name, UNTESTED.format(students=students))


def build_timm(model_name: str, num_classes: int, in_channels: int, small: bool, width: float) -> nn.Module:
    import timm

    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    if small:
        for conv in image_convolutions(model, in_channels, f"{PREFIX}{model_name}"):
            conv.stride = (1, 1)
    return model


def image_convolutions(model: nn.Module, in_channels: int, name: str) -> list[nn.Conv2d]:
    """The convolutions whose input is the image itself (a stem may have parallel branches, as RepVGG's).

    Found by running a blank image through the network in eval mode: no weight or statistic changes.
    """
    found: list[nn.Conv2d] = []
    image = torch.zeros(1, in_channels, PROBE_SIZE, PROBE_SIZE)

    def record(module: nn.Module, args: tuple) -> None:
        if args and args[0] is image:
            found.append(module)

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(image)
    except Exception as err:
        raise UserError(f"{name} does not run on small images ({PROBE_SIZE} px: {err}); "
                        "pick a convolutional model, or use dataset.image_size ≥ 96") from None
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return found
