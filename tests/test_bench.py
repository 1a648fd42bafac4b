"""Latency and size measurement."""

import numpy as np
import torch
from torch import nn

from lib import bench


class ThreadRecorder(nn.Module):
    """Records torch's intra-op thread count at every forward pass."""

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return self.linear(x.mean(dim=(2, 3)))


def test_latency_runs_with_the_requested_thread_count_and_restores_it():
    before = torch.get_num_threads()
    model = ThreadRecorder()
    sample = np.zeros((4, 8, 8, 3), dtype=np.float32)
    result = bench.latency_ms(model, sample, threads=2, warmup=3, runs=7)
    assert model.seen == [2] * 10
    assert result["threads"] == 2 and result["runs"] == 7
    assert torch.get_num_threads() == before


def test_latency_reports_ordered_percentiles():
    result = bench.latency_ms(ThreadRecorder(), np.zeros((1, 8, 8, 3), np.float32), threads=1,
                              warmup=0, runs=20)
    assert 0 < result["p50"] <= result["p90"]


def test_throughput_counts_images_of_the_whole_batch():
    result = bench.throughput(ThreadRecorder(), np.zeros((16, 8, 8, 3), np.float32), threads=1, runs=3)
    assert result["batch"] == 16 and result["images_per_s"] > 0


def test_size_bytes_is_the_file_size(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x" * 1234)
    assert bench.size_bytes(path) == 1234
