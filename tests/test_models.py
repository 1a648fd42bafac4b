"""lib.models: registry, output shapes, ONNX export of every entry, widths, roles, checkpoints, lib.pruning."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import ROOT
from lib import models
from lib.config import Params, from_dict
from lib.errors import UserError
from lib.export import export_onnx
from lib.models import ModelSpec, build, check_params, load_checkpoint, save_checkpoint
from lib.pruning import count_macs_params, prune_channels
from lib.runtimes import onnx_runner, torch_runner

ALL = models.available()
STUDENTS = [name for name in ALL if not models.architecture(name).teacher_only]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 64, 224])
@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv2"])
def test_output_shape_is_batch_by_classes(arch, size, channels):
    torch.manual_seed(0)
    model = build(arch, num_classes=3, in_channels=channels, image_size=size).eval()
    batch = 1 if size == 224 else 2
    with torch.inference_mode():
        out = model(torch.randn(batch, channels, size, size))
    assert out.shape == (batch, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("arch", ALL)
def test_every_architecture_gives_batch_by_classes_at_small_inputs(arch, size, channels):
    torch.manual_seed(0)
    model = build(arch, num_classes=3, in_channels=channels, image_size=size).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ALL)
def test_every_architecture_exports_to_onnx_that_matches_torch(tmp_path, arch):
    torch.manual_seed(0)
    model = build(arch, num_classes=3, in_channels=3, image_size=32).eval()
    export_onnx(model, torch.zeros(1, 3, 32, 32), tmp_path / "m.onnx", opset=18)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(onnx_runner(tmp_path / "m.onnx", threads=1)(x), torch_runner(model)(x),
                               rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("arch", ["mobilenetv3_small", "mnasnet"])
def test_batch_norm_statistics_follow_a_short_training(arch):
    """torchvision's slow momentum left eval outputs constant after two epochs (INT8 AUC 0.5)."""
    model = build(arch, 2, 1, 28)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 for m in norms)


def test_registry_lists_expected_architectures():
    assert {"resnet18", "vgg16_bn", "densenet121", "efficientnet_b0", "mobilenetv2", "shufflenet_v2",
            "squeezenet1_1", "mnasnet", "regnet_y_400mf"} <= set(ALL)
    assert ALL == sorted(ALL)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UserError, match="vgg11") as err:
        build("vgg11", 2, 3, 32)
    for name in ALL:
        assert name in str(err.value)


@pytest.mark.parametrize("kwargs", [dict(num_classes=1, in_channels=3), dict(num_classes=2, in_channels=2)])
def test_invalid_classes_or_channels_raise(kwargs):
    with pytest.raises(UserError):
        build("mobilenetv2", image_size=28, **kwargs)


# ---------------------------------------------------------------- width multipliers and roles

def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["mobilenetv2", "mnasnet", "shufflenet_v2", "mobilenetv3_small"])
def test_smaller_width_gives_fewer_parameters(arch):
    widths = models.architecture(arch).widths
    sizes = [_n_params(build(arch, 2, 1, 28, width=w)) for w in widths]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(widths)


def test_unsupported_width_lists_supported_ones():
    with pytest.raises(UserError, match=r"0\.6 for mobilenetv2.*0\.35, 0\.5, 0\.75, 1\.0"):
        build("mobilenetv2", 2, 1, 28, width=0.6)


def test_width_on_architecture_without_multiplier_is_refused():
    with pytest.raises(UserError, match="width: got 0.5 for resnet18; it supports only 1.0"):
        build("resnet18", 2, 1, 28, width=0.5)


def test_width_is_recorded_in_checkpoint_and_reloaded(tmp_path):
    spec = ModelSpec("mobilenetv2", 2, 1, 28, width=0.5)
    model = models.build_from_spec(spec)
    save_checkpoint(model, spec, tmp_path / "m.pt")
    assert torch.load(tmp_path / "m.pt", weights_only=True)["spec"]["width"] == 0.5
    loaded, loaded_spec = load_checkpoint(tmp_path / "m.pt")
    assert loaded_spec == spec
    assert _n_params(loaded) == _n_params(model) < _n_params(build("mobilenetv2", 2, 1, 28))


def test_checkpoint_written_before_widths_loads_at_full_width(tmp_path):
    model = build("mobilenetv2", 2, 1, 16)
    save_checkpoint(model, ModelSpec("mobilenetv2", 2, 1, 16), tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    del ckpt["spec"]["width"]
    torch.save(ckpt, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")[1].width == 1.0


@pytest.mark.parametrize("arch", ["mobilenetv2", "mobilenetv3_small", "mobilenetv3_large"])
def test_last_stride_one_doubles_the_last_map_with_the_same_parameters(arch):
    x = torch.zeros(1, 1, 28, 28)
    native, kept = build(arch, 2, 1, 28), build(arch, 2, 1, 28, last_stride=1)
    assert _n_params(kept) == _n_params(native)
    native_map, kept_map = native.features(x).shape[-1], kept.features(x).shape[-1]
    assert kept_map == 2 * native_map and kept(x).shape == (1, 2)
    assert count_macs_params(kept, x)[0] > count_macs_params(native, x)[0]


def test_last_stride_is_recorded_in_checkpoint_and_survives_pruning(tmp_path):
    spec = ModelSpec("mobilenetv2", 2, 1, 28, last_stride=1)
    example = torch.zeros(1, 1, 28, 28)
    model = prune_channels(models.build_from_spec(spec).eval(), example, 0.5, "l1", 1, 8)
    save_checkpoint(model, spec, tmp_path / "m.pt")
    loaded, loaded_spec = load_checkpoint(tmp_path / "m.pt")
    assert loaded_spec.last_stride == 1 and loaded.features(example).shape[-1] == 4
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))


def test_last_stride_one_is_refused_where_the_architecture_cannot(params_dict):
    params_dict.update(student="mnasnet", student_last_stride=1)
    with pytest.raises(UserError, match="student_last_stride: got 1 for mnasnet; only mobilenetv2, mobilenetv3_large"):
        check_params(from_dict(Params, params_dict))
    params_dict["student_last_stride"] = 3
    with pytest.raises(UserError, match="student_last_stride: got 3; expected one of 1, 2"):
        from_dict(Params, params_dict)


def test_teacher_only_student_is_refused_at_params_validation(params_dict):
    params_dict["student"] = "shufflenet_v2"
    with pytest.raises(UserError, match="shufflenet_v2 cannot be a student: torch-pruning .*teacher only"):
        check_params(from_dict(Params, params_dict))


def test_teacher_only_architecture_is_accepted_as_teacher(params_dict):
    params_dict["teacher"] = "shufflenet_v2"
    assert from_dict(Params, params_dict).teacher == "shufflenet_v2"


def test_student_width_is_validated_at_params_validation(params_dict):
    params_dict.update(student="mnasnet", student_width=0.6)
    with pytest.raises(UserError, match=r"student_width: got 0\.6 for mnasnet; .*0\.5, 0\.75, 1\.0, 1\.3"):
        check_params(from_dict(Params, params_dict))
    params_dict["student_width"] = 0.5
    check_params(from_dict(Params, params_dict))


def test_unknown_student_lists_valid_names(params_dict):
    params_dict["student"] = "shufflenet"
    with pytest.raises(ValueError, match="unknown model 'shufflenet'.*shufflenet_v2"):
        check_params(from_dict(Params, params_dict))


def _trained_bn_model(arch: str, size: int) -> torch.nn.Module:
    """A model whose batch-norm running statistics are not the defaults, so buffers must round-trip."""
    torch.manual_seed(1)
    model = build(arch, 2, 1, size).train()
    with torch.no_grad():
        model(torch.randn(4, 1, size, size) * 3 + 1)
    return model.eval()


@pytest.mark.parametrize("arch", ["mobilenetv2", "resnet18"])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, arch):
    model = _trained_bn_model(arch, 16)
    spec = ModelSpec(arch, 2, 1, 16)
    path = tmp_path / "m.pt"
    save_checkpoint(model, spec, path)
    loaded, loaded_spec = load_checkpoint(path)
    assert loaded_spec == spec
    assert not loaded.training
    x = torch.randn(3, 1, 16, 16)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_checkpoint_loads_with_weights_only(tmp_path):
    model = _trained_bn_model("mobilenetv2", 16)
    path = tmp_path / "m.pt"
    save_checkpoint(model, ModelSpec("mobilenetv2", 2, 1, 16), path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"spec", "layers", "state_dict"}
    assert ckpt["spec"] == {"arch": "mobilenetv2", "num_classes": 2, "in_channels": 1, "image_size": 16,
                            "width": 1.0, "last_stride": 2}
    assert set(ckpt["state_dict"]) == set(model.state_dict())


def test_load_checkpoint_missing_file_raises(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_load_checkpoint_foreign_file_raises_value_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(UserError, match="not a checkpoint"):
        load_checkpoint(path)


# ---------------------------------------------------------------- pruning

@pytest.fixture(scope="module")
def pruned():
    """mobilenetv2 at 28 px (1 channel, 2 classes), before and after 50 % channel pruning."""
    torch.manual_seed(2)
    model = build("mobilenetv2", 2, 1, 28).eval()
    example = torch.zeros(1, 1, 28, 28)
    before = count_macs_params(model, example)
    model = prune_channels(model, example, 0.5, "l1", 1, 8)
    after = count_macs_params(model, example)
    return model, before, after


def test_pruning_half_removes_at_least_half_the_parameters(pruned):
    model, (macs_before, params_before), (macs_after, params_after) = pruned
    assert params_after <= 0.5 * params_before
    assert macs_after < macs_before
    assert params_after == sum(p.numel() for p in model.parameters())
    with torch.inference_mode():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_pruned_checkpoint_reproduces_outputs_in_fresh_process(tmp_path, pruned):
    model, _, (_, params_after) = pruned
    path = tmp_path / "pruned.pt"
    save_checkpoint(model, ModelSpec("mobilenetv2", 2, 1, 28), path)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = model(x)
    torch.save({"x": x, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import torch
        from lib.models import load_checkpoint
        model, spec = load_checkpoint({str(path)!r})
        io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)
        with torch.inference_mode():
            out = model(io["x"])
        n_params = sum(p.numel() for p in model.parameters())
        assert n_params == {params_after}, n_params
        print("MAXDIFF", float((out - io["expected"]).abs().max()))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    max_diff = float(result.stdout.split("MAXDIFF")[1])
    assert max_diff <= 1e-6


def test_pruned_model_cannot_load_into_unpruned_shapes_silently(tmp_path, pruned):
    """The pruned checkpoint's recorded layer widths really differ from the stock architecture."""
    model, _, _ = pruned
    path = tmp_path / "pruned.pt"
    save_checkpoint(model, ModelSpec("mobilenetv2", 2, 1, 28), path)
    loaded, _ = load_checkpoint(path)
    stock = build("mobilenetv2", 2, 1, 28)
    assert loaded.classifier[-1].in_features < stock.classifier[-1].in_features
    assert loaded.classifier[-1].out_features == 2
