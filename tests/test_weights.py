"""lib.weights and lib.timm_models: starting weights from a file or ImageNet (never downloaded here), timm names.

Every test that could reach the network points torch's hub at tmp_path and replaces the download
functions of torch.hub and of timm's Hugging Face loader with one that fails, as offline.
"""

from __future__ import annotations

import hashlib
import re
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F
from torchvision import models as tvm

from lib import models, weights
from lib.config import from_dict, Params
from lib.errors import UserError
from lib.models import ModelSpec, build, save_checkpoint
from lib.timm_models import STUDENTS, TEACHER_ONLY

TIMM_STUDENT = "timm/mobilenetv4_conv_small"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: torch's hub cache is empty (tmp_path) and every download raises."""
    import timm.models._hub

    def refuse(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", refuse)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_rgb_state_dict_loads_into_a_grayscale_model_with_a_new_head(tmp_path):
    torch.manual_seed(0)
    rgb = build("resnet18", 10, 3, 28)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    gray = build("resnet18", 2, 1, 28)
    fresh_head = gray.fc.weight.detach().clone()

    record = weights.initial_weights(gray, "resnet18", str(tmp_path / "rgb.pt"))

    assert record["source"] == "path" and record["skipped"] == ["fc.bias", "fc.weight"]
    assert record["sha256"] == hashlib.sha256((tmp_path / "rgb.pt").read_bytes()).hexdigest()
    torch.testing.assert_close(gray.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(gray.layer4[1].bn2.running_var, rgb.layer4[1].bn2.running_var)
    torch.testing.assert_close(gray.fc.weight, fresh_head)  # the head keeps its initialisation


def test_summed_filters_answer_a_gray_image_as_the_rgb_filters_do():
    torch.manual_seed(0)
    filters = torch.randn(8, 3, 3, 3)
    gray = torch.rand(1, 1, 28, 28)
    summed = weights._adapt_channels(filters, torch.empty(8, 1, 3, 3))
    torch.testing.assert_close(F.conv2d(gray, summed), F.conv2d(gray.expand(1, 3, 28, 28), filters))


def test_a_project_checkpoint_of_the_same_network_loads_whole(tmp_path):
    torch.manual_seed(0)
    source = build("mobilenetv2", 2, 1, 28)
    save_checkpoint(source, ModelSpec("mobilenetv2", 2, 1, 28), tmp_path / "student.pt")
    target = build("mobilenetv2", 2, 1, 28)
    record = weights.initial_weights(target, "mobilenetv2", str(tmp_path / "student.pt"), key="student_weights")
    assert record["skipped"] == []
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_imagenet_shaped_resnet_skips_the_7x7_stem_it_cannot_fit_into_the_small_input_stem():
    torch.manual_seed(0)
    imagenet_like = tvm.resnet18(weights=None).state_dict()  # 7×7 stride-2 stem, 1000 classes
    target = build("resnet18", 2, 1, 28)
    assert weights.transfer(target, imagenet_like, "test") == ["conv1.weight", "fc.bias", "fc.weight"]
    torch.testing.assert_close(target.layer1[0].conv1.weight, imagenet_like["layer1.0.conv1.weight"])


def test_stem_filters_are_copied_where_the_shapes_fit():
    torch.manual_seed(0)
    imagenet_like = tvm.mobilenet_v2(weights=None).state_dict()  # 3×3 stride-2 stem: same filter shape
    target = build("mobilenetv2", 2, 1, 28)
    assert weights.transfer(target, imagenet_like, "test") == ["classifier.1.bias", "classifier.1.weight"]
    torch.testing.assert_close(target.features[0][0].weight,
                               imagenet_like["features.0.0.weight"].sum(dim=1, keepdim=True))


@pytest.mark.parametrize("arch, builder, skipped", [
    ("mnasnet", "mnasnet1_0", ["classifier.1.bias", "classifier.1.weight"]),  # its loader reads module versions
    ("vgg16_bn", "vgg16_bn", [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("bias", "weight")]),
])
def test_imagenet_shaped_weights_fit_the_small_input_networks(arch, builder, skipped):
    torch.manual_seed(0)
    imagenet_like = tvm.get_model(builder, weights=None).state_dict()
    assert weights.transfer(build(arch, 2, 1, 28), imagenet_like, "test") == skipped


def test_weights_of_another_network_are_refused_and_nothing_is_loaded(tmp_path):
    torch.manual_seed(0)
    torch.save(build("resnet34", 2, 1, 28).state_dict(), tmp_path / "r34.pt")
    target = build("resnet18", 2, 1, 28)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(UserError, match=r"teacher_weights: .*r34\.pt into resnet18.*layer1\.2\..*not in the model"):
        weights.initial_weights(target, "resnet18", str(tmp_path / "r34.pt"))
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_a_file_without_a_state_dict_is_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UserError, match="holds no state dict"):
        weights.initial_weights(build("resnet18", 2, 1, 28), "resnet18", str(tmp_path / "list.pt"))


def test_none_leaves_the_built_network_as_it_was():
    torch.manual_seed(0)
    model = build("mobilenetv2", 2, 1, 28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert weights.initial_weights(model, "mobilenetv2", "none") == {"source": "none"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_imagenet_offline_is_a_one_line_error_naming_the_file_and_where_to_put_it(offline):
    with pytest.raises(UserError) as err:
        weights.initial_weights(build("resnet18", 2, 1, 28), "resnet18", "imagenet")
    message = str(err.value)
    assert "\n" not in message and "ResNet18_Weights.IMAGENET1K_V1" in message and "URLError" in message
    assert str(offline / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_timm_imagenet_offline_is_a_one_line_error_naming_the_file_and_where_to_put_it(offline):
    with pytest.raises(UserError) as err:
        weights.initial_weights(build(TIMM_STUDENT, 2, 1, 28), TIMM_STUDENT, "imagenet", key="student_weights")
    message = str(err.value)
    assert "\n" not in message and message.startswith("student_weights: could not download timm's weights")
    assert str(offline / "timm" / "mobilenetv4_conv_small.safetensors") in message
    assert "huggingface.co/timm/mobilenetv4_conv_small" in message


def test_timm_weights_put_by_hand_load_offline_and_leave_the_seeded_draws_alone(offline):
    import timm
    from safetensors.torch import save_file

    pretrained = timm.create_model("mobilenetv4_conv_small").state_dict()  # 3 channels, 1000 classes
    offline.joinpath("timm").mkdir(parents=True)
    save_file(pretrained, offline / "timm" / "mobilenetv4_conv_small.safetensors")
    model = build(TIMM_STUDENT, 2, 1, 28)
    torch.manual_seed(1)
    record = weights.initial_weights(model, TIMM_STUDENT, "imagenet", key="student_weights")
    draw = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(draw, torch.rand(3))
    assert record["name"].startswith("timm/mobilenetv4_conv_small.")
    assert record["skipped"] == ["classifier.bias", "classifier.weight"]
    torch.testing.assert_close(model.conv_stem.weight, pretrained["conv_stem.weight"].sum(dim=1, keepdim=True))


def test_imagenet_is_refused_for_a_width_torchvision_has_no_weights_for():
    with pytest.raises(UserError, match=r"student_weights: torchvision has no ImageNet weights for mobilenetv2 "
                                        r"at width 0\.5 \(widths with weights: 1\.0\)"):
        weights.check_weights("student_weights", "imagenet", ["mobilenetv2"], 0.5)
    weights.check_weights("student_weights", "imagenet", ["mnasnet"], 0.5)
    weights.check_weights("teacher_weights", "imagenet", ["resnet18", "timm/resnet50"])


def test_timm_names_resolve_and_small_inputs_get_a_stride_one_stem():
    model = build(TIMM_STUDENT, 3, 1, 28).eval()
    assert model.conv_stem.stride == (1, 1) and model.conv_stem.in_channels == 1
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    assert build(TIMM_STUDENT, 3, 1, 224).conv_stem.stride == (2, 2)
    assert not models.architecture(TIMM_STUDENT).teacher_only


def test_unknown_timm_name_says_how_to_list_valid_names():
    with pytest.raises(UserError, match=r"unknown timm model 'mobilenetv9_tiny'.*timm\.list_models\('\*mobile\*'\)"):
        models.architecture("timm/mobilenetv9_tiny")


def test_timm_models_off_the_allow_list_are_refused_as_students_with_their_reason():
    assert TIMM_STUDENT.removeprefix("timm/") in STUDENTS
    for name, reason in TEACHER_ONLY.items():
        with pytest.raises(UserError, match=re.escape(f"timm/{name} cannot be a student: {reason}")):
            models.check_student(f"timm/{name}")
    with pytest.raises(UserError, match="not on the list of timm students .*timm/mobilenetv4_conv_small"):
        models.check_student("timm/resnet50")


@pytest.mark.parametrize("changes, message", [
    ({"teacher_weights": "imagenet21k"}, "teacher_weights: got 'imagenet21k'; expected none, imagenet or"),
    ({"student_weights": "missing/student.pt"}, "student_weights: file 'missing/student.pt' not found"),
    ({"teacher": ["resnet18", "densenet121"], "teacher_weights": "__file__"}, "for an ensemble teacher"),
])
def test_weights_params_are_validated(params_dict, tmp_path, changes, message):
    (tmp_path / "w.pt").write_bytes(b"")
    changes = {k: str(tmp_path / "w.pt") if v == "__file__" else v for k, v in changes.items()}
    with pytest.raises(UserError, match=message):
        from_dict(Params, {**params_dict, **changes})


def test_weights_params_default_to_none(params_dict):
    params_dict.pop("teacher_weights", None)
    params_dict.pop("student_weights", None)
    params = from_dict(Params, params_dict)
    assert params.teacher_weights == params.student_weights == "none"
