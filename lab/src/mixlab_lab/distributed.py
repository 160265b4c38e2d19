"""The lab's process-group helpers, built on :mod:`mixlab.distributed` (the core's primitives).

Launch with ``torchrun --nproc_per_node=N ...``; every helper is a no-op (single-process
answers) when no process group is running, so the same code runs with and without torchrun.

:func:`init_from_env` (gloo on CPU, nccl on GPU, with a timeout so a dead or stuck rank raises
instead of hanging) and :func:`shutdown`, :func:`is_main`, :func:`barrier`, per-rank seeds
(:func:`rank_seed`, :func:`rank_generator`), :func:`shard`, reductions and object exchange
(:func:`all_reduce_sum`, :func:`broadcast_object`, :func:`all_gather_object`),
:func:`sync_buffers` and :func:`ddp_mean`. Global pairing (:class:`~mixlab.distributed.GlobalMixer`),
:func:`~mixlab.distributed.get_info` and the batch gathers live in :mod:`mixlab.distributed`.
"""
from __future__ import annotations

import datetime
import math
import os

import numpy as np
import torch
import torch.distributed as dist

from mixlab import tree_map_with_path
from mixlab.distributed import DistInfo, env_int, gather_sizes, get_info


def _running() -> bool:
    return dist.is_available() and dist.is_initialized()


def _collective_device() -> torch.device:
    return get_info().device


def _check_index(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


__all__ = [
    "init_from_env", "shutdown", "is_main", "barrier", "rank_seed", "rank_generator", "shard", "all_reduce_sum",
    "broadcast_object", "all_gather_object", "sync_buffers", "ddp_mean",
]


def init_from_env(timeout_s: float = 300.0, *, backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Reads ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (set by
    ``torchrun``). Without ``WORLD_SIZE`` it returns single-process info and starts nothing.
    Calling it again once the group is up returns the same info.

    Args:
        timeout_s: seconds a collective (and the rendezvous) may wait for the other ranks
            before raising. A rank that died or hangs makes the others fail with an error
            after at most this long instead of hanging forever.
        backend: ``"gloo"`` or ``"nccl"``; default nccl when CUDA is available, else gloo.

    Returns:
        DistInfo of this process.
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if backend not in (None, "gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo', 'nccl' or None, got {backend!r}")
    if _running():
        return get_info()
    if "WORLD_SIZE" not in os.environ:
        return DistInfo()
    world, rank = env_int("WORLD_SIZE", 1), env_int("RANK", 0)
    local = env_int("LOCAL_RANK", rank)
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world} is set but this torch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    kwargs = {}
    if backend == "nccl":
        # Surface NCCL failures and timeouts as errors in the training process.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout_s)), world_size=world,
                            rank=rank, **kwargs)
    return get_info()


def shutdown() -> None:
    """Leave the process group, if one is running.

    Every rank first waits for the others (a barrier), then destroys the group: a rank that
    tore its gloo group down while a peer was still inside a collective aborted at exit
    ("terminate called without an active exception") in about one run in three here.
    """
    if _running():
        dist.barrier()
        dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0, and in a single process."""
    return not _running() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _running():
        dist.barrier()


def rank_seed(seed: int, rank: int | None = None) -> int:
    """The seed of ``rank``'s streams: ``seed`` itself on rank 0, else one derived from ``(seed, rank)``.

    Rank 0 keeping ``seed`` makes a one-process run repeat a run made without torchrun; other
    ranks get numpy ``SeedSequence([seed, rank])`` (63 bits), so each rank draws differently
    and a run repeats exactly.
    """
    _check_index("seed", seed)
    rank = get_info().rank if rank is None else _check_index("rank", rank)
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> 1)


def rank_generator(seed: int, rank: int | None = None, device="cpu") -> torch.Generator:
    """A generator on ``device`` seeded with :func:`rank_seed` (rank defaults to this process's)."""
    return torch.Generator(device=device).manual_seed(rank_seed(seed, rank))


def shard(indices: torch.Tensor, rank: int | None = None, world_size: int | None = None) -> torch.Tensor:
    """This rank's share of an index order, as ``DistributedSampler`` cuts it.

    The order is padded by repeating its first entries up to a multiple of ``world_size``,
    then rank ``r`` takes entries ``r, r + world_size, ...``; every rank gets the same number
    of rows (so equal batches, and a plain local mean loss is the global mean under DDP).
    Pass the same ``indices`` on every rank (a permutation from a generator seeded alike,
    advanced once per epoch: the equivalent of ``set_epoch``).
    """
    info = get_info()
    rank = info.rank if rank is None else rank
    world_size = info.world_size if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    n = indices.shape[0]
    pad = (-n) % world_size
    if pad and n:
        indices = torch.cat([indices, indices[:pad].repeat(math.ceil(pad / n))[:pad]])
    return indices[rank::world_size]


def all_reduce_sum(values):
    """Sum a tensor, or every tensor of a nested dict / list / tuple (metric sums, counts), over ranks.

    All leaves travel in one float64 all-reduce (exact for integer counts below 2**53) and come
    back in the same structure with their own dtype, shape and device; the input is not
    modified (a single process gets copies).
    """
    leaves = []

    def collect(leaf, path):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"all_reduce_sum needs tensors, got {type(leaf).__name__} at {path}")
        leaves.append(leaf)
        return leaf

    tree_map_with_path(collect, values, "values")
    if not _running() or not leaves:
        return tree_map_with_path(lambda leaf, path: leaf.detach().clone(), values, "values")
    dev = _collective_device()  # leaves may live on different devices (a CPU count beside a GPU sum)
    flat = torch.cat([t.detach().reshape(-1).to(device=dev, dtype=torch.float64) for t in leaves])  # (total,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    pieces = iter(torch.split(flat, [t.numel() for t in leaves]))

    def restore(leaf, path):
        piece = next(pieces).view(leaf.shape)
        if not leaf.dtype.is_floating_point and not leaf.dtype.is_complex:
            piece = piece.round()
        return piece.to(device=leaf.device, dtype=leaf.dtype)

    return tree_map_with_path(restore, values, "values")


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from rank ``src`` to every rank and return it (identity alone).

    It is pickled on ``src`` and unpickled on the others: use it only for values this job made
    (a run directory, a resume step), never for data read from an untrusted file.
    """
    if not _running():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` alone). Pickled: job-made values only."""
    if not _running():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sync_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (BatchNorm running statistics) to every rank, so all ranks hold one state."""
    if _running():
        for b in module.buffers():
            dist.broadcast(b.data, src=src)


def ddp_mean(per_sample_loss: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Local loss whose DDP gradient is the gradient of the mean over the *global* batch.

    DDP averages gradients over ranks, so a plain local ``.mean()`` weights every rank
    equally: right when ranks hold equal batches, but rows of a smaller last batch would
    weigh more. This returns ``sum(per_sample) * world_size / sum(sizes)``, so after DDP's
    division by ``world_size`` every row of the global batch has weight ``1 / N`` exactly
    (no rank counted twice, none under-weighted). In a single process it is the mean.

    Args:
        per_sample_loss: ``(B,)`` per-sample losses, e.g. ``target.loss(criterion, logits,
            reduction="none")`` for mixed targets.
        sizes: every rank's batch size (:func:`mixlab.distributed.gather_sizes`; asked for when omitted).
    """
    if not isinstance(per_sample_loss, torch.Tensor) or per_sample_loss.ndim != 1:
        got = tuple(per_sample_loss.shape) if isinstance(per_sample_loss, torch.Tensor) else type(per_sample_loss)
        raise ValueError(f"per_sample_loss must be a (B,) tensor, got {got}")
    if sizes is None:
        sizes = gather_sizes(per_sample_loss.shape[0])
    total = sum(sizes)
    if total == 0:
        return per_sample_loss.sum()
    return per_sample_loss.sum() * (len(sizes) / total)
