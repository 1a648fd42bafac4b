"""Deployment costs of an artifact: size on disk, parameters and MACs, latency and throughput on CPU.

Latency is timed at batch 1 after a warm-up, over many runs, with the thread count fixed for every
runtime (torch intra-op threads, ONNX Runtime intra-op threads, TFLite interpreter threads) and recorded.
"""

from __future__ import annotations

import os
import platform
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from lib.runtimes import load_runner


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_runs(artifact: nn.Module | str | Path, batch: np.ndarray, threads: int,
              warmup: int, runs: int) -> np.ndarray:
    """Wall-clock milliseconds of `runs` calls on `batch` (float32 NHWC, normalised), after `warmup` calls."""
    with torch_threads(threads):
        run = load_runner(artifact, threads=threads)
        for _ in range(warmup):
            run(batch)
        times = np.empty(runs)
        for i in range(runs):
            start = time.perf_counter()
            run(batch)
            times[i] = (time.perf_counter() - start) * 1e3
    return times


def latency_ms(artifact: nn.Module | str | Path, sample: np.ndarray, threads: int,
               warmup: int, runs: int) -> dict:
    """Batch-1 latency: median (p50), p90 and mean over `runs`."""
    times = time_runs(artifact, sample[:1], threads, warmup, runs)
    return {"p50": float(np.median(times)), "p90": float(np.percentile(times, 90)),
            "mean": float(times.mean()), "threads": threads, "runs": runs}


def throughput(artifact: nn.Module | str | Path, batch: np.ndarray, threads: int, runs: int) -> dict:
    """Images per second at a larger batch, from the median batch time."""
    times = time_runs(artifact, batch, threads, warmup=1, runs=runs)
    return {"images_per_s": float(len(batch) / (np.median(times) / 1e3)), "batch": len(batch),
            "threads": threads}


def size_bytes(path: str | Path) -> int:
    return os.path.getsize(path)


COMPRESS_LEVEL = 6  # zlib's default, the level zip and gzip use


def compressed_kb(path: str | Path) -> float:
    """KiB of the file deflated at COMPRESS_LEVEL: what a zipped download of it costs.

    Dense float weights hardly compress; the zeros of unstructured pruning do, though the file on disk and
    the runtime's work stay as large.
    """
    return round(len(zlib.compress(Path(path).read_bytes(), COMPRESS_LEVEL)) / 1024, 1)


def machine() -> dict:
    """What the timings were taken on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__}
