"""prune.method: unstructured — global magnitude pruning whose zeros really are in the exported weights."""

from __future__ import annotations

import copy
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lib import bench
from lib.config import PruneConfig, from_dict
from lib.errors import UserError
from lib.export import export_onnx
from lib.models import ModelSpec, build, load_checkpoint, save_checkpoint
from lib.pruning import output_layer
from lib.sparsity import make_permanent, prunable_layers, sparsify_steps, sparsity
from test_switches import run_prune_stage

SIZE = 28
EXAMPLE = torch.zeros(1, 1, SIZE, SIZE)
SPEC = ModelSpec(arch="mobilenetv2", num_classes=2, in_channels=1, image_size=SIZE)


def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("mobilenetv2", 2, 1, SIZE).eval()


def sparse_student(ratio: float, steps: int = 1) -> torch.nn.Module:
    model = student()
    for _ in sparsify_steps(model, ratio, steps):
        pass
    return make_permanent(model)


def onnx_weights(path) -> list[np.ndarray]:
    """The float weight tensors (convolutions: 4-D; the output layer: 2-D) of an exported model."""
    arrays = [numpy_helper.to_array(init) for init in onnx.load(str(path)).graph.initializer]
    return [a for a in arrays if a.dtype == np.float32 and a.ndim >= 2]


def zero_share(arrays: list[np.ndarray]) -> float:
    return sum(int((a == 0).sum()) for a in arrays) / sum(a.size for a in arrays)


def test_exported_onnx_has_the_requested_sparsity_and_a_dense_output_layer(tmp_path):
    model = sparse_student(0.6)
    assert not [k for k in model.state_dict() if k.endswith(("_orig", "_mask"))]  # plain `weight` keys
    save_checkpoint(model, SPEC, tmp_path / "pruned.pt")
    loaded, _ = load_checkpoint(tmp_path / "pruned.pt")
    export_onnx(loaded, EXAMPLE, tmp_path / "pruned.onnx", opset=18)

    weights = onnx_weights(tmp_path / "pruned.onnx")
    convolutions = [w for w in weights if w.ndim == 4]  # every MobileNetV2 layer but the classifier
    total = sum(w.size for w in convolutions)
    assert total == sum(m.weight.numel() for m in prunable_layers(loaded))
    assert zero_share(convolutions) == pytest.approx(0.6, abs=1 / total)  # the ratio, within rounding
    assert zero_share(convolutions) == pytest.approx(sparsity(loaded)["pruned_layers"], abs=1e-6)
    (classifier,) = [w for w in weights if w.ndim == 2]
    assert classifier.shape == (2, output_layer(loaded).in_features) and (classifier != 0).all()


def test_steps_follow_the_linear_schedule_and_zeros_survive_fine_tuning():
    model = student()
    layers = prunable_layers(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reached, zeros_before = [], None
    for target in sparsify_steps(model, 0.5, 3):
        reached.append(sparsity(model)["pruned_layers"])
        zeros = torch.cat([(m.weight_orig * m.weight_mask == 0).flatten() for m in layers])
        if zeros_before is not None:
            assert zeros[zeros_before].all()  # a weight zeroed at one step stays zero at the next
        model.train()
        model(torch.randn(4, 1, SIZE, SIZE)).logsumexp(1).sum().backward()  # a fine-tune step between steps
        optimizer.step()
        zeros_before = zeros
    assert reached == pytest.approx([0.5 / 3, 1 / 3, 0.5], abs=1e-6)
    make_permanent(model)
    assert sparsity(model)["pruned_layers"] == pytest.approx(0.5, abs=1e-6)


def test_layer_scope_zeroes_the_ratio_of_every_layer_and_global_scope_the_ratio_overall():
    layer, every = student(), student()
    for _ in sparsify_steps(layer, 0.75, 2, scope="layer"):
        pass
    for _ in sparsify_steps(every, 0.75, 2, scope="global"):
        pass
    shares = {scope: [float((m.weight == 0).float().mean()) for m in prunable_layers(make_permanent(model))]
              for scope, model in (("layer", layer), ("global", every))}
    sizes = [m.weight.numel() for m in prunable_layers(layer)]
    assert all(share == pytest.approx(0.75, abs=1 / size) for share, size in zip(shares["layer"], sizes))
    assert sparsity(layer)["pruned_layers"] == pytest.approx(sparsity(every)["pruned_layers"], abs=1e-3)
    assert max(shares["global"]) - min(shares["global"]) > 0.2  # layers of small weights lose more


def test_a_pruning_step_leaves_a_model_that_copies_and_pickles_to_workers():
    model = student()
    for _ in sparsify_steps(model, 0.3, 2):
        copy.deepcopy(model)  # what the op counter does
        pickle.loads(bytes(ForkingPickler.dumps(model)))  # what data-parallel training does (spawn)
        with torch.inference_mode():
            model(EXAMPLE)  # scoring between steps


def test_sparse_model_compresses_smaller_on_the_same_disk_size(tmp_path):
    save_checkpoint(student(), SPEC, tmp_path / "dense.pt")
    save_checkpoint(sparse_student(0.7), SPEC, tmp_path / "sparse.pt")
    dense, sparse = tmp_path / "dense.pt", tmp_path / "sparse.pt"
    assert bench.size_bytes(sparse) == pytest.approx(bench.size_bytes(dense), rel=0.01)
    assert bench.compressed_kb(sparse) < 0.75 * bench.compressed_kb(dense)
    assert bench.compressed_kb(dense) > 0.85 * bench.size_bytes(dense) / 1024  # dense floats hardly compress


def test_config_defaults_to_structured_and_refuses_l2_or_an_unknown_method(params_dict):
    prune = params_dict["prune"]
    assert from_dict(PruneConfig, {k: v for k, v in prune.items() if k != "method"}).method == "structured"
    assert from_dict(PruneConfig, {**prune, "method": "unstructured"}).method == "unstructured"
    with pytest.raises(UserError, match="prune.importance.*l1"):
        from_dict(PruneConfig, {**prune, "method": "unstructured", "importance": "l2"}, "prune.")
    with pytest.raises(UserError, match="prune.method.*structured, unstructured"):
        from_dict(PruneConfig, {**prune, "method": "sparse"}, "prune.")


def test_prune_stage_reports_the_sparsity_its_saved_weights_have(tmp_path):
    """The stage's figures against the zeros of the checkpoint it saved (which the ONNX export carries over
    unchanged, as the first test shows), with a fine-tune between two steps and after the last."""
    report = run_prune_stage(tmp_path, distill={"alpha": 0.0},
                             prune={"method": "unstructured", "ratio": 0.5, "iterative_steps": 2,
                                    "step_epochs": 1, "finetune_epochs": 1})
    assert report["method"] == "unstructured" and "finetune" in report["steps"][0]
    assert [s["ratio"] for s in report["steps"]] == pytest.approx([0.25, 0.5])
    state = torch.load(tmp_path / "models/student_pruned.pt", weights_only=True)["state_dict"]
    assert not [k for k in state if k.endswith(("_orig", "_mask"))]
    convolutions = [t.numpy() for t in state.values() if t.ndim == 4]  # every layer but the classifier
    assert report["sparsity"]["pruned_layers"] == pytest.approx(zero_share(convolutions), abs=1e-6)
    assert report["sparsity"]["pruned_layers"] == pytest.approx(0.5, abs=1e-4)
    params = report["params"]
    assert params["stored_after"] == params["before"]
    assert params["nonzero_after"] == sum(int(t.count_nonzero()) for k, t in state.items()
                                          if t.is_floating_point() and "running_" not in k)
    assert report["macs"]["after"] == report["macs"]["before"] and "note" in report["macs"]
