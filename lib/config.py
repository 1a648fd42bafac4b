"""`params.yaml` → typed, frozen, validated objects.

Every stage loads and validates the *whole* file, so a typo in `prune.ratio` fails at `prepare_data`,
in well under a second, rather than after the teacher has trained for an hour. Model names are checked
against the registry by `lib.models.check_params` when the first stage that builds a model starts
(`lib.context.setup`), so preparing data does not depend on the model code.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lib.errors import UserError

PARAMS_FILE = Path("params.yaml")


def between(lo: float, hi: float, *, lo_open: bool = False) -> dict:
    """Field metadata: the value must lie in [lo, hi] (or (lo, hi] with `lo_open`)."""
    return {"range": (lo, hi, lo_open)}


@dataclass(frozen=True)
class DatasetConfig:
    source: Literal["medmnist", "imagefolder", "arrays"]
    root: str
    image_size: int = field(metadata=between(8, 1024))
    test_fraction: float = field(metadata=between(0.0, 0.5, lo_open=True))
    name: str | None = None

    def __post_init__(self) -> None:
        if self.source == "medmnist" and not self.name:
            raise UserError("dataset.name is required when dataset.source is 'medmnist' "
                            "(e.g. name: pneumoniamnist)")
        holds = {"medmnist": "the MedMNIST .npz files", "imagefolder": "the train/ and val/ folders",
                 "arrays": "X_train.npy, y_train.npy, X_val.npy and y_val.npy"}[self.source]
        if Path(self.root).is_file():
            raise UserError(f"dataset.root: {self.root!r} is a file; point it at the folder that holds "
                            f"{holds} (e.g. {str(Path(self.root).parent)!r})")
        if self.source != "medmnist" and not Path(self.root).is_dir():
            raise UserError(f"dataset.root: folder {self.root!r} does not exist; "
                            f"point it at the folder that holds {holds}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(metadata=between(1, 10_000))
    batch_size: int = field(metadata=between(1, 65_536))
    lr: float = field(metadata=between(0.0, 10.0, lo_open=True))
    weight_decay: float = field(metadata=between(0.0, 1.0))
    label_smoothing: float = field(metadata=between(0.0, 0.5))
    augment: bool
    class_weights: Literal["none", "balanced"]
    monitor: Literal["accuracy", "balanced_accuracy", "auc", "f1_macro"]
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp16 needs CUDA; checked with the device
    workers: int = field(default=0, metadata=between(0, 64))
    nproc: int = field(default=1, metadata=between(1, 64))
    # training images whose batch-norm statistics replace the running ones before each validation; 0: off
    bn_recalibration: int = field(default=0, metadata=between(0, 100_000_000))
    # levers, each off by default (docs/recipes.md#levers); multi-label data refuse mixing in `lib.context.setup`
    ema_decay: float = field(default=0.0, metadata=between(0.0, 0.9999))  # 0: no moving average of the weights
    mixup_alpha: float = field(default=0.0, metadata=between(0.0, 10.0))  # 0: off
    cutmix_alpha: float = field(default=0.0, metadata=between(0.0, 10.0))  # 0: off
    policy: Literal["none", "trivialaugment", "randaugment"] = "none"
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    warmup_epochs: float = field(default=0.0, metadata=between(0.0, 10_000.0))  # schedule: cosine only

    def __post_init__(self) -> None:
        if self.warmup_epochs > 0 and self.schedule != "cosine":
            raise UserError(f"train.warmup_epochs: got {self.warmup_epochs} with schedule: {self.schedule}; "
                            "the warm-up belongs to schedule: cosine (onecycle warms up over its first 15 %); "
                            "set train.schedule: cosine or train.warmup_epochs: 0")


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = field(metadata=between(0.0, 100.0, lo_open=True))
    alpha: float = field(metadata=between(0.0, 1.0))
    epochs: int = field(metadata=between(1, 10_000))
    lr: float = field(metadata=between(0.0, 10.0, lo_open=True))
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


@dataclass(frozen=True)
class PruneConfig:
    ratio: float = field(metadata=between(0.0, 0.95))
    importance: Literal["l1", "l2"]
    iterative_steps: int = field(metadata=between(1, 100))
    round_to: int = field(metadata=between(1, 256))
    finetune_epochs: int = field(metadata=between(1, 10_000))
    lr: float = field(metadata=between(0.0, 10.0, lo_open=True))
    step_epochs: int = field(default=1, metadata=between(0, 10_000))  # fine-tune between iterative steps
    method: Literal["structured", "unstructured"] = "structured"  # remove channels | zero single weights
    scope: Literal["global", "layer"] = "global"  # unstructured: rank all layers together | each layer alone

    def __post_init__(self) -> None:
        if self.method == "unstructured" and self.importance != "l1":
            raise UserError(f"prune.importance: got {self.importance!r}, but prune.method: unstructured ranks "
                            "single weights by magnitude (l1) only; set prune.importance: l1, or keep l2 with "
                            "prune.method: structured")


@dataclass(frozen=True)
class ExportConfig:
    opset: int = field(metadata=between(18, 21))


@dataclass(frozen=True)
class QuantizeConfig:
    calibration_samples: int = field(metadata=between(1, 100_000))
    int8_io: bool
    per_channel: bool
    method: Literal["ptq", "qat"] = "ptq"  # qat: the `qat` stage fine-tunes with fake quantization too
    qat_epochs: int = field(default=2, metadata=between(1, 10_000))
    qat_lr: float = field(default=0.0002, metadata=between(0.0, 10.0, lo_open=True))


@dataclass(frozen=True)
class BenchmarkConfig:
    threads: int = field(metadata=between(1, 1024))
    warmup: int = field(metadata=between(0, 100_000))
    runs: int = field(metadata=between(1, 1_000_000))
    throughput_batch: int = field(metadata=between(1, 65_536))
    throughput_runs: int = field(metadata=between(1, 100_000))
    bootstrap_samples: int = field(metadata=between(10, 1_000_000))
    # the rule of the headline's figures; val_threshold (binary tasks only) is checked against the data set's
    # classes by `lib.context.setup`
    decision: Literal["argmax", "val_threshold"] = "argmax"


@dataclass(frozen=True)
class ExplainConfig:
    samples: int = field(metadata=between(1, 64))


@dataclass(frozen=True)
class Params:
    seed: int = field(metadata=between(0, 2**32 - 1))
    device: Literal["auto", "cpu", "cuda"]
    teacher: str | list[str]  # one model, or the members of an ensemble teacher
    student: str
    dataset: DatasetConfig
    train: TrainConfig
    distill: DistillConfig
    prune: PruneConfig
    export: ExportConfig
    quantize: QuantizeConfig
    benchmark: BenchmarkConfig
    explain: ExplainConfig
    student_width: float = 1.0  # width multiplier of the student, where its architecture has one
    student_last_stride: Literal[1, 2] = 2  # 1: its last downsampling at stride 1 (lib.models.keep_last_resolution)
    teacher_weights: str = "none"  # none | imagenet | a .pt/.pth file: where training starts (lib.weights)
    student_weights: str = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, str):
            _check_ensemble(self.teacher)
        _check_weights("teacher_weights", self.teacher_weights)
        _check_weights("student_weights", self.student_weights)
        if not isinstance(self.teacher, str) and self.teacher_weights not in ("none", "imagenet"):
            raise UserError(f"teacher_weights: got the file {self.teacher_weights!r} for an ensemble teacher; "
                            "a file holds one network: use none or imagenet (applied to each member)")

    @property
    def teachers(self) -> tuple[str, ...]:
        """The teacher's networks: its one name, or an ensemble's members."""
        return (self.teacher,) if isinstance(self.teacher, str) else tuple(self.teacher)


def _check_weights(key: str, value: str) -> None:
    """none, imagenet, or the path of an existing .pt/.pth file (a param: the file's content is not tracked)."""
    if value in ("none", "imagenet"):
        return
    if Path(value).suffix not in (".pt", ".pth"):
        raise UserError(f"{key}: got {value!r}; expected none, imagenet or the path of a .pt/.pth checkpoint")
    if not Path(value).is_file():
        raise UserError(f"{key}: file {value!r} not found (paths are relative to the project root)")


def _check_ensemble(names: list[str]) -> None:
    if len(names) < 2 or len(set(names)) < len(names):
        raise UserError(f"teacher: got {names!r}; an ensemble teacher lists two or more different models, "
                        "each once (e.g. teacher: [resnet18, densenet121]); for one teacher write its name "
                        "(teacher: resnet18)")


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate `params.yaml`; raise `UserError` naming the key (or YAML position) and the fix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run the stage from the project root")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {_yaml_problem(err)}") from None
    return from_dict(Params, data)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """yaml's multi-line message → 'line L, column C: <problem>' (1-based, as editors count)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking unknown keys, missing keys, types and ranges."""
    where = prefix.rstrip(".") or "params"
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                        f"valid keys are {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in data:
            if f.default is dataclasses.MISSING:
                raise UserError(f"{key} is missing from params.yaml")
            continue
        values[name] = _coerce(key, data[name], hints[name], f.metadata)
    return cls(**values)


def _coerce(key: str, value: Any, hint: Any, metadata: Any) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hints = [a for a in args if a is not type(None)]  # the first whose type the value has, else the first
        hint = next((a for a in hints if isinstance(value, typing.get_origin(a) or a)), hints[0])
        return _coerce(key, value, hint, metadata)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{key}: got {value!r}; expected a list")
        return [_coerce(f"{key}[{i}]", item, args[0], metadata) for i, item in enumerate(value)]
    if origin is Literal:
        if value not in args:
            raise UserError(f"{key}: got {value!r}; expected one of {', '.join(map(str, args))}")
        return value
    if hint is bool and not isinstance(value, bool):
        raise UserError(f"{key}: got {value!r}; expected true or false")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"{key}: got {value!r}; expected an integer")
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string; DVC reads it as a number
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: got {value!r}; expected a number")
        value = float(value)
    if hint is str and not isinstance(value, str):
        raise UserError(f"{key}: got {value!r}; expected a string")
    if "range" in metadata:
        lo, hi, lo_open = metadata["range"]
        if not (lo < value <= hi if lo_open else lo <= value <= hi):
            raise UserError(f"{key}: got {value!r}; expected a value in "
                            f"{'(' if lo_open else '['}{lo}, {hi}]")
    return value
