"""lib.models: registry, output shapes, checkpoints (plain and pruned) and lib.pruning."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT
from lib import models
from lib.models import ModelSpec, build, load_checkpoint, save_checkpoint
from lib.pruning import count_macs_params, prune_channels


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


def test_registry_lists_expected_architectures():
    assert {"resnet18", "mobilenetv2"} <= set(models.available())
    assert models.available() == sorted(models.available())


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="vgg11") as err:
        build("vgg11", 2, 3, 32)
    for name in models.available():
        assert name in str(err.value)


@pytest.mark.parametrize("kwargs", [dict(num_classes=1, in_channels=3), dict(num_classes=2, in_channels=2)])
def test_invalid_classes_or_channels_raise(kwargs):
    with pytest.raises(ValueError):
        build("mobilenetv2", image_size=28, **kwargs)


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
    assert ckpt["spec"] == {"arch": "mobilenetv2", "num_classes": 2, "in_channels": 1, "image_size": 16}
    assert set(ckpt["state_dict"]) == set(model.state_dict())


def test_load_checkpoint_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")


def test_load_checkpoint_foreign_file_raises_value_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a checkpoint"):
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
