"""One process or many: the same training code runs alone or under ``torchrun --nproc-per-node N``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; with more than one process we join the group (NCCL on GPUs, gloo on
CPU), each rank takes its own GPU, and the model is wrapped in DDP (replicated) or FSDP (``fully_shard``, sharded
per transformer block, for models that do not fit one device). Without torchrun every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from yuefu.errors import InvalidArgumentError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidArgumentError("train.device is cuda but no CUDA device is available")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device(name)


def init(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun with several processes; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local_rank, dev)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        return all_reduce_sum(t) / dist.get_world_size()
    return t


def all_reduce_max_int(value: int) -> int:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.long, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def broadcast_(t: torch.Tensor, src: int = 0) -> None:
    if dist.is_initialized():
        dist.broadcast(t, src)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (as a list, on every rank)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def wrap(module: nn.Module, info: DistInfo, mode: str, blocks: list[nn.Module] | None = None,
         find_unused: bool = False) -> nn.Module:
    """DDP or FSDP (each of ``blocks`` sharded on its own, then the rest) when distributed; else the module."""
    if not info.distributed:
        return module
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in blocks or []:
            fully_shard(block)
        fully_shard(module)
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    # buffers (codebooks) are kept in sync by the trainer, not re-broadcast from rank 0 at every forward
    params = inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused, **no_sync)


def unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


def is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on CPU; under FSDP it is gathered (every rank must call; rank 0 gets it)."""
    if is_fsdp(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu().clone() for k, v in unwrap(module).state_dict().items()}


def load_full_state_dict(module: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    if is_fsdp(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, sd, options=StateDictOptions(full_state_dict=True))
    else:
        unwrap(module).load_state_dict(sd)


def optimizer_state(module: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    if is_fsdp(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(module, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return opt.state_dict()


def load_optimizer_state(module: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    if is_fsdp(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(module, opt, state, options=StateDictOptions(full_state_dict=True))
    else:
        opt.load_state_dict(state)
