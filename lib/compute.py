"""Where and how networks compute: seeding, the device, the autocast precision.

Kept apart from the training loop so that stages which only convert or measure models can fix their
seeds and pick a device without depending on training code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from lib.errors import UserError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; `cuda` without a GPU is an error, not a silent fallback."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' was asked for but torch sees no CUDA GPU; "
                        "set device: auto or cpu in params.yaml")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass(frozen=True)
class Compute:
    """Where and how a network computes: the device and the autocast precision (weights stay fp32).

    Tensors are kept in channels-last (NHWC) memory format, which oneDNN on CPU and cuDNN on GPUs run
    faster for convolutions than NCHW.
    """
    device: torch.device
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision == "fp16" and self.device.type != "cuda":
            raise UserError(f"precision: got 'fp16' on device {self.device.type!r}; fp16 with loss scaling "
                            "needs a CUDA GPU; use fp32 or bf16 on CPU")

    def autocast(self) -> torch.autocast:
        """Mixed precision for bf16/fp16; for fp32 autocast switched off, also inside an enclosing one."""
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES.get(self.precision),
                              enabled=self.precision != "fp32")

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Scales fp16 losses so small gradients do not underflow; a pass-through for fp32 and bf16."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def to_input(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, memory_format=torch.channels_last, non_blocking=True)
