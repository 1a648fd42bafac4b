"""Where a network's first weights come from (`teacher_weights`, `student_weights`): `none`, `imagenet`, a file.

`none` keeps the random initialisation the registry builds. `imagenet` takes the architecture's `DEFAULT`
ImageNet weights from torchvision's weights API (`timm/<name>`: timm's pretrained weights), downloaded into
torch's hub cache on first use. A path is a checkpoint of this project (`lib.models.save_checkpoint`) or a
plain state dict saved with `torch.save` (`.pt`/`.pth`).

`transfer` adapts the weights to the network the data needs:
- 3-channel filters that read the image become 1-channel filters for grayscale data by summing over the
  RGB channels: a gray image (R = G = B = x) then gets the same response as from the RGB filters.
- The small-input stem keeps the pretrained filters where their shape fits; where it does not (ResNet's and
  DenseNet's 7×7 first convolution against the 3×3 stride-1 stem) that convolution stays random.
- The classification head is replaced for the data's classes: its tensors of another shape are skipped.
Everything else must match key for key and shape for shape; skipped keys are reported and recorded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision import models as tvm

from lib.errors import UserError
from lib.timm_models import is_timm, timm_name

NONE, IMAGENET = "none", "imagenet"

# Registry name → torchvision builder that has ImageNet weights, per width multiplier.
_TORCHVISION = {
    **{name: {1.0: name} for name in ("resnet18", "resnet34", "resnet50", "vgg16_bn", "vgg19_bn", "densenet121",
                                      "efficientnet_b0", "efficientnet_b3", "regnet_y_400mf", "squeezenet1_1")},
    "mobilenetv2": {1.0: "mobilenet_v2"},
    "mobilenetv3_small": {1.0: "mobilenet_v3_small"},
    "mobilenetv3_large": {1.0: "mobilenet_v3_large"},
    "shufflenet_v2": {0.5: "shufflenet_v2_x0_5", 1.0: "shufflenet_v2_x1_0", 1.5: "shufflenet_v2_x1_5",
                      2.0: "shufflenet_v2_x2_0"},
    "mnasnet": {0.5: "mnasnet0_5", 0.75: "mnasnet0_75", 1.0: "mnasnet1_0", 1.3: "mnasnet1_3"},
}


def check_weights(key: str, source: str, archs: Sequence[str], width: float = 1.0) -> None:
    """Refuse, before any training, `imagenet` for a network without ImageNet weights (nothing downloads).

    The form of `source` (and that a path exists) is checked with the params (`lib.config`).
    """
    if source != IMAGENET:
        return
    for arch in archs:
        if not is_timm(arch):
            torchvision_builder(arch, width, key)
            continue
        import timm

        if not timm.models.is_model_pretrained(timm_name(arch)):
            raise UserError(f"{key}: timm has no pretrained weights for {arch}; use {key}: none")


def torchvision_builder(arch: str, width: float, key: str) -> str:
    """The torchvision builder whose ImageNet weights fit `arch` at `width`."""
    builders = _TORCHVISION.get(arch, {})
    if width not in builders:
        widths = ", ".join(map(str, builders)) or "none"
        raise UserError(f"{key}: torchvision has no ImageNet weights for {arch} at width {width} "
                        f"(widths with weights: {widths}); use {key}: none or another width")
    return builders[width]


def initial_weights(model: nn.Module, arch: str, source: str, width: float = 1.0,
                    key: str = "teacher_weights") -> dict:
    """Load `source` into the freshly built `model` (in place); return what the metrics record about it."""
    if source == NONE:
        return {"source": NONE}
    if source == IMAGENET:
        check_weights(key, source, [arch], width)
        with torch.random.fork_rng(devices=[]):  # building the source network must not move the seeded draws
            state, name = _timm_imagenet(arch, key) if is_timm(arch) else _torchvision_imagenet(arch, width, key)
        record = {"source": IMAGENET, "name": name}
    else:
        state = checkpoint_state(source, key)
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
        record = {"source": "path", "path": source, "sha256": digest}
    skipped = transfer(model, state, f"{key}: {record.get('name', source)} into {arch}")
    print(f"{key}: started {arch} from {record.get('name', source)}; skipped {', '.join(skipped) or 'nothing'}",
          flush=True)
    return {**record, "skipped": skipped}


def _offline(key: str, what: str, err: Exception, url: str, where: Path) -> UserError:
    first_line = (str(err).strip().splitlines() or [""])[0]
    return UserError(f"{key}: could not download {what} ({type(err).__name__}: {first_line}); "
                     f"offline, download {url} and put it at {where}")


def _torchvision_imagenet(arch: str, width: float, key: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of torchvision's ImageNet network (its loader: `weights.get_state_dict(check_hash=True)`,
    and DenseNet's renaming of old keys), and the weights' name."""
    builder = torchvision_builder(arch, width, key)
    weights = tvm.get_model_weights(builder).DEFAULT
    try:
        network = tvm.get_model(builder, weights=weights)
    except (OSError, RuntimeError) as err:  # no network (URLError), or a corrupt file (hash mismatch)
        where = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
        raise _offline(key, str(weights), err, weights.url, where) from None
    return network.state_dict(), str(weights)


def timm_local_file(model_name: str, url: str) -> Path:
    """Where a timm model's weights (downloaded from `url`) may be put by hand: torch's hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / "timm" / f"{model_name}{Path(url).suffix}"


def _timm_imagenet(arch: str, key: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of timm's pretrained network (3 channels, its own head), and the weights' name."""
    import timm

    model_name = timm_name(arch)
    cfg = timm.models.get_pretrained_cfg(model_name)
    url = (f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{cfg.hf_hub_filename or 'model.safetensors'}"
           if cfg.hf_hub_id else cfg.url)
    local = timm_local_file(model_name, url)
    try:
        network = timm.create_model(model_name, pretrained=True,
                                    pretrained_cfg_overlay={"file": str(local)} if local.is_file() else None)
    except Exception as err:  # timm downloads through Hugging Face's hub or torch.hub: many kinds of failure
        raise _offline(key, f"timm's weights {cfg.hf_hub_id or url}", err, url, local) from None
    return network.state_dict(), cfg.hf_hub_id or url


def checkpoint_state(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint of this project or of a plain state dict."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{key}: {path} is not a torch checkpoint: {err}") from None
    state = data["state_dict"] if isinstance(data, dict) and {"spec", "state_dict"} <= set(data) else data
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{key}: {path} holds no state dict (a mapping of names to tensors): save "
                        "model.state_dict() or use a checkpoint this project wrote")
    return state


def transfer(model: nn.Module, source: dict[str, torch.Tensor], what: str) -> list[str]:
    """Copy `source` into `model` by the rules of the module docstring; return the skipped keys, sorted.

    Raise `UserError` (nothing loaded) when any other tensor is missing, unexpected or of another shape.
    """
    target = model.state_dict()  # filled in place: it keeps the modules' versions, which MNASNet's loader reads
    stem, head = _first_conv(model), list(model.named_parameters())[-1][0].rpartition(".")[0]
    skipped, problems = [], []
    for key, value in source.items():
        value = _adapt_channels(value, target.get(key))
        if key in target and value.shape == target[key].shape:
            target[key] = value
        elif key.startswith(f"{head}.") or (key in target and key.startswith(f"{stem}.")):
            skipped.append(key)
        else:
            shape = f"{tuple(value.shape)} in the weights, {tuple(target[key].shape)} in the model" \
                if key in target else "not in the model"
            problems.append(f"{key}: {shape}")
    missing = [key for key in target if key not in source and not key.startswith(f"{head}.")
               and not key.endswith("num_batches_tracked")]
    problems += [f"{key}: not in the weights" for key in missing]
    if problems:
        raise UserError(f"{what}: the weights do not fit the network ({len(problems)} tensors, e.g. "
                        f"{'; '.join(problems[:3])})")
    model.load_state_dict(target)
    return sorted(skipped)


def _first_conv(model: nn.Module) -> str:
    return next(name for name, module in model.named_modules() if isinstance(module, nn.Conv2d))


def _adapt_channels(value: torch.Tensor, wanted: torch.Tensor | None) -> torch.Tensor:
    """RGB filters → one grayscale filter each, by their sum; anything else unchanged."""
    if (wanted is not None and value.ndim == 4 and wanted.ndim == 4 and value.shape[1] == 3
            and wanted.shape[1] == 1 and value.shape[0] == wanted.shape[0]):
        return value.sum(dim=1, keepdim=True)
    return value
