"""mixlab under ``torch.distributed``: process-group helpers and mixing across ranks.

Launch with ``torchrun --nproc_per_node=N ...``; every helper is a no-op (single-process
answers) when no process group is running, so the same code runs with and without torchrun.

Helpers: :func:`init_from_env` (gloo on CPU, nccl on GPU, with a timeout so a dead or stuck
rank raises instead of hanging), per-rank seeds, sharding, reductions, gathers, :func:`ddp_mean`.
Global pairing: :class:`GlobalMixer` / :func:`GlobalMixUp` mix each rank's rows with partners
drawn from every rank's batch, exactly as single-process mixing of the concatenated batch.

Convention: ``lam`` weights the original row, ``mixed[i] = lam[i] * x[i] + (1 - lam[i]) *
global_x[index[i]]``, where ``index`` points into the concatenated (global) batch.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import zlib

import numpy as np
import torch
import torch.distributed as dist

from ._tree import first_leaf, tree_map_with_path
from .ops import mix
from .params import MixParams
from .targets import MixedTarget

__all__ = [
    "DistInfo", "init_from_env", "get_info", "shutdown", "is_main", "barrier", "rank_seed", "rank_generator",
    "shard", "all_reduce_sum", "broadcast_object", "all_gather_object", "sync_buffers", "gather_sizes",
    "gather_batch", "ddp_mean", "local_params", "GlobalMixer", "GlobalMixUp",
]


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 .. world_size - 1.
        world_size: number of processes (1 without torchrun).
        local_rank: rank on this machine (selects the GPU).
        device: the device this rank computes on (``cuda:<local_rank>`` or ``cpu``).
        is_main: True on rank 0, the only rank that writes files and draws progress bars.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    is_main: bool = True

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one rank is running."""
        return self.world_size > 1


def _running() -> bool:
    return dist.is_available() and dist.is_initialized()


def _check_index(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def get_info() -> DistInfo:
    """The :class:`DistInfo` of the running process group, or single-process info without one."""
    if not _running():
        return DistInfo()
    rank, world = dist.get_rank(), dist.get_world_size()
    local = _env_int("LOCAL_RANK", rank)
    device = torch.device("cuda", local) if dist.get_backend() == "nccl" else torch.device("cpu")
    return DistInfo(rank, world, local, device, rank == 0)


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
    world, rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
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


def shutdown() -> None:
    """Leave the process group, if one is running.

    Every rank first waits for the others (a barrier), then destroys the group: a rank that
    tore its gloo group down while a peer was still inside a collective aborted at exit
    ("terminate called without an active exception") in about one run in three here.
    """
    if _running():
        dist.barrier()
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    return get_info().device


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


def gather_sizes(batch_size: int) -> list[int]:
    """Every rank's local batch size, in rank order (``[batch_size]`` in a single process)."""
    _check_index("batch_size", batch_size)
    if not _running():
        return [batch_size]
    mine = torch.tensor([batch_size], dtype=torch.int64, device=_collective_device())
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return [int(t.item()) for t in out]


def _gather_leaf(leaf: torch.Tensor, sizes: list[int], path: str) -> torch.Tensor:
    if not isinstance(leaf, torch.Tensor) or leaf.ndim == 0:
        raise TypeError(f"gather_batch needs tensors with a batch dimension, got {type(leaf).__name__} at {path}")
    rank = dist.get_rank()
    if leaf.shape[0] != sizes[rank]:
        raise ValueError(f"batch leaf {path} has batch size {leaf.shape[0]}, expected {sizes[rank]} on rank {rank}")
    dev = _collective_device()
    n = max(sizes)
    local = leaf.detach().to(dev)
    if local.shape[0] < n:  # all_gather needs equal shapes: pad, then trim
        local = torch.cat([local, local.new_zeros((n - local.shape[0],) + tuple(local.shape[1:]))])
    out = [torch.empty_like(local) for _ in sizes]
    dist.all_gather(out, local.contiguous())
    return torch.cat([t[:s] for t, s in zip(out, sizes)]).to(leaf.device)


def gather_batch(tree, sizes: list[int] | None = None):
    """Concatenate every rank's batch in rank order, detached (no gradient through the copy).

    Args:
        tree: a tensor or nested dict / list / tuple of tensors with the batch on dim 0
            (inputs, labels); ranks may hold different batch sizes.
        sizes: every rank's batch size, from :func:`gather_sizes` (asked for when omitted).
    """
    if not _running():
        return tree_map_with_path(lambda leaf, path: leaf.detach(), tree)
    leaf = first_leaf(tree)
    if sizes is None:
        sizes = gather_sizes(leaf.shape[0] if isinstance(leaf, torch.Tensor) and leaf.ndim else 0)
    return tree_map_with_path(lambda leaf, path: _gather_leaf(leaf, sizes, path), tree)


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
        sizes: every rank's batch size (:func:`gather_sizes`; asked for when omitted).
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


def local_params(params: MixParams, offset: int, batch_size: int) -> MixParams:
    """Rows ``offset .. offset + batch_size`` of parameters drawn for a global batch (:meth:`MixParams.rows`).

    ``index`` keeps pointing into the global batch (pass it as ``partner``); the region, if any,
    is sliced by the region itself, so every region type shards without code here.
    """
    return params.rows(offset, offset + batch_size)


def _generator_digest(generator: torch.Generator) -> int:
    return zlib.crc32(generator.get_state().cpu().numpy().tobytes())


class GlobalMixer:
    """Mix each rank's rows with partners drawn from the global batch (``pairing="global"``).

    Every call all-gathers all ranks' inputs and labels (detached: no gradient flows through
    the gathered copy), lets the transform draw :class:`~mixlab.MixParams` for the whole
    global batch with a generator identical on every rank, and mixes this rank's rows with
    their slice of them: the ranks' outputs together equal ``transform(cat_x, cat_y)``.

    Args:
        transform: a :class:`~mixlab.MixUp`, :class:`~mixlab.CutMix` or
            :class:`~mixlab.MixUpOrCutMix` (any pairing and mode: they apply to the global
            batch). Its ``generator`` must be seeded identically on every rank (for example
            ``torch.Generator().manual_seed(run_seed)``), and must not be used elsewhere.
        check_generator: on the first call, verify that every rank's generator state is the
            same and raise ``ValueError`` if not (one small collective, once).

    Returns (when called with ``x, y``):
        ``(mixed_x, MixedTarget)`` for the local rows. The target holds the gathered labels
        as ``partner``, and its ``params.index`` points into the global batch (as
        :meth:`sample` returns it).

    Convention: ``mixed[i] = lam[i] * x[i] + (1 - lam[i]) * global_x[index[i]]``.
    """

    def __init__(self, transform, *, check_generator: bool = True):
        if not callable(getattr(transform, "sample", None)) or not hasattr(transform, "generator"):
            raise TypeError(f"transform must be a mixlab MixUp, CutMix or MixUpOrCutMix, got {type(transform).__name__}")
        if transform.generator is None:
            raise ValueError("transform.generator must be a torch.Generator seeded identically on every rank, got None")
        if getattr(transform, "k", 2) != 2:
            raise ValueError(f"GlobalMixer supports two-way mixing (k=2), got k={transform.k}")
        if getattr(transform, "inplace", False):
            raise ValueError("GlobalMixer needs transform.inplace=False (the partner rows live in the gathered copy)")
        self.transform = transform
        self._check = bool(check_generator)

    def _verify_generator(self) -> None:
        self._check = False
        if len(set(all_gather_object(_generator_digest(self.transform.generator)))) != 1:
            raise ValueError("GlobalMixer: the transform's generator differs between ranks; seed it identically "
                             "on every rank (e.g. torch.Generator().manual_seed(run_seed))")

    def sample(self, x, sizes: list[int]) -> tuple[MixParams, object]:
        """Gather ``x`` and draw the global params.

        Returns:
            ``(params, global_x)``: this rank's rows of the global parameters (``index``
            points into the global batch) and the gathered, detached global batch.
        """
        if self._check:
            self._verify_generator()
        global_x = gather_batch(x, sizes)
        params = self.transform.sample(global_x)
        rank = dist.get_rank() if _running() else 0
        return local_params(params, sum(sizes[:rank]), sizes[rank]), global_x

    def __call__(self, x, y=None):
        """Mix this rank's batch. Returns ``(mixed_x, MixedTarget)``, or ``mixed_x`` without ``y``."""
        leaf = first_leaf(x)
        if not isinstance(leaf, torch.Tensor) or leaf.ndim == 0:
            raise TypeError("x must be a tensor or nested batch of tensors with a leading batch dimension")
        sizes = gather_sizes(leaf.shape[0])
        params, global_x = self.sample(x, sizes)
        # The gathered batch is the partner batch; params.index points into it.
        mixed = mix(x, params, partner=global_x)
        if y is None:
            return mixed
        target = MixedTarget(y, params, partner=gather_batch(y, sizes), num_classes=self.transform.num_classes,
                             label_smoothing=self.transform.label_smoothing)
        return mixed, target

    def __repr__(self):
        return f"GlobalMixer({self.transform!r})"


def GlobalMixUp(alpha: float = 1.0, *, seed: int | None = None, generator: torch.Generator | None = None,
                mode: str = "sample", **kwargs) -> GlobalMixer:
    """MixUp with partners from the global batch; one lambda per sample by default.

    Args:
        alpha: Beta(alpha, alpha) concentration.
        seed: seeds a fresh generator on this rank's device, the same on every rank (or pass
            ``generator``).
        generator: a generator seeded identically on every rank.
        mode: ``"sample"`` (default: one lambda per global row), ``"batch"`` or ``"pair"``.
        **kwargs: other :class:`~mixlab.MixUp` options (``keep_dominant``, ``p``, ``pairing``,
            ``num_classes``, ``label_smoothing``); two-way mixing only.
    """
    from .transforms import MixUp

    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed= or generator= (identical on every rank)")
    if seed is not None:
        generator = torch.Generator(device=get_info().device).manual_seed(_check_index("seed", seed))
    return GlobalMixer(MixUp(alpha, mode=mode, generator=generator, **kwargs))
