"""Data-parallel training on several processes, launched from inside a stage with torchrun's machinery.

`launch(fn, nproc, ...)` starts `nproc` workers through `torch.distributed.launcher.api.elastic_launch`
(what `torchrun --standalone` runs), each joins the process group (gloo on CPU, NCCL on GPUs), and the
return values come back by rank. Outside a process group every helper below is a no-op for one process,
so the training loop reads the same either way.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any, Callable

import torch
import torch.distributed as dist


def launch(fn: Callable[..., Any], nproc: int, *args: Any) -> dict[int, Any]:
    """Run `fn(*args)` on `nproc` local processes; return {rank: return value}.

    `fn` and `args` are pickled to freshly spawned interpreters: pass CPU tensors and modules.
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.5, start_method="spawn")
    return elastic_launch(config, fn)(*args)


def init(device: torch.device) -> torch.device:
    """Join the group torchrun set up for this worker; return this rank's device.

    Each rank gets an equal share of the CPU cores so the ranks do not oversubscribe them.
    """
    local_rank, nproc = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def close() -> None:
    if is_active():
        dist.destroy_process_group()


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    return rank() == 0


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's decision, on every rank (e.g. "this epoch is the best so far")."""
    if not is_active():
        return flag
    tensor = torch.tensor([int(flag)], device=_comm_device())
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over the ranks, in place."""
    if is_active():
        reduced = tensor.to(_comm_device())
        dist.all_reduce(reduced)
        tensor.copy_(reduced.cpu())
    return tensor


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A hash of every weight and buffer: equal on all ranks when data-parallel training stayed in sync."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _comm_device() -> torch.device:
    """NCCL only moves GPU tensors; gloo moves CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
