"""lib.distributed with lib.training: two gloo processes train one model data-parallel on a tiny set."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from conftest import PARAMS_YAML
from lib import distributed
from lib.config import load_params
from lib.context import Context
from lib.losses import HardLabelLoss
from lib.models import load_checkpoint, save_checkpoint
from lib.task import for_meta
from lib.training import train_worker

EPOCHS = 2


def tiny_context(nproc: int) -> Context:
    """8 px two-class images, 2 batches of 8 per rank and epoch; params.yaml with the data-parallel knobs."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = np.arange(n) % 2
        images = np.where(labels[:, None, None, None] == 0, rng.integers(0, 90, (n, 8, 8, 1)),
                          rng.integers(160, 256, (n, 8, 8, 1))).astype(np.uint8)
        return images, labels.astype(np.int64)

    params = load_params(PARAMS_YAML)
    train = dataclasses.replace(params.train, batch_size=8, nproc=nproc, precision="fp32", workers=0)
    meta = {"classes": ["dark", "bright"], "mean": [0.5], "std": [0.35], "channels": 1, "image_size": 8}
    return Context(dataclasses.replace(params, train=train), meta, torch.device("cpu"),
                   {"train": split(32), "val": split(8), "test": split(8)}, for_meta(meta))


def test_two_gloo_ranks_end_identical_and_only_rank_zero_writes(tmp_path, capfd):
    ctx = tiny_context(nproc=2)
    spec = ctx.spec("mobilenetv2")
    live = tmp_path / "live"
    results = distributed.launch(train_worker, 2, ctx.build(spec.arch), HardLabelLoss(ctx.task), ctx, EPOCHS,
                                 1e-2, str(live), "fp32")

    (fingerprint0, state, info), (fingerprint1, state1, info1) = results[0], results[1]
    assert fingerprint0 == fingerprint1 == distributed.fingerprint(state)
    assert state1 is None and info1 is None  # weights and metrics come back from rank 0 alone
    assert info["images_per_s"] > 0 and 1 <= info["best_epoch"] <= EPOCHS
    loss_rows = (live / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(loss_rows) == 1 + EPOCHS  # header + one row per epoch: one writer
    assert capfd.readouterr().out.count(f"epoch 1/{EPOCHS}") == 1

    model = ctx.build(spec.arch)
    model.load_state_dict(state)
    save_checkpoint(model, spec, tmp_path / "model.pt")
    loaded, loaded_spec = load_checkpoint(tmp_path / "model.pt")
    x = torch.randn(2, 1, 8, 8)
    assert loaded_spec == spec
    assert torch.equal(loaded(x), model.eval()(x))
