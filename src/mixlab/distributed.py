"""Mixing across ranks under ``torch.distributed``: the core primitives (torch only).

Every function is a no-op (single-process answers) when no process group is running, so the
same code runs with and without ``torchrun``. Start the group yourself
(``torch.distributed.init_process_group``) or with the lab's helpers in
the lab's ``mixlab_lab.distributed`` (set-up with a timeout, per-rank seeds, sharding, buffer sync,
reductions, ``ddp_mean``); this module never imports the lab.

Here: :class:`DistInfo` / :func:`get_info` (where this process sits), :func:`gather_sizes` and
:func:`gather_batch` (every rank's batch, detached), :func:`local_params` (this rank's rows of
global parameters), and global pairing: :class:`GlobalMixer` / :func:`GlobalMixUp` mix each
rank's rows with partners drawn from every rank's batch, exactly as single-process mixing of
the concatenated batch.

Convention: ``lam`` weights the original row, ``mixed[i] = lam[i] * x[i] + (1 - lam[i]) *
global_x[index[i]]``, where ``index`` points into the concatenated (global) batch.
"""
from __future__ import annotations

import dataclasses
import os
import zlib

import torch
import torch.distributed as dist

from ._tree import first_leaf, tree_map_with_path
from .ops import mix
from .params import MixParams
from .targets import MixedTarget
from .mixer import keeps_label_state, label_params

__all__ = ["DistInfo", "get_info", "env_int", "gather_sizes", "gather_batch", "local_params", "GlobalMixer", "GlobalMixUp"]


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


def env_int(name: str, default: int) -> int:
    """The integer environment variable ``name`` (torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or ``default``
    when it is unset or empty; a non-integer value is an error naming the variable."""
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
    local = env_int("LOCAL_RANK", rank)
    device = torch.device("cuda", local) if dist.get_backend() == "nccl" else torch.device("cpu")
    return DistInfo(rank, world, local, device, rank == 0)


def _collective_device() -> torch.device:
    return get_info().device


def _all_gather_int(value: int) -> list[int]:
    """Every rank's int ``value`` (one int64 all-gather), in rank order (``[value]`` alone)."""
    if not _running():
        return [value]
    mine = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return [int(t.item()) for t in out]


def gather_sizes(batch_size: int) -> list[int]:
    """Every rank's local batch size, in rank order (``[batch_size]`` in a single process)."""
    return _all_gather_int(_check_index("batch_size", batch_size))


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


def local_params(params: MixParams, offset: int, batch_size: int) -> MixParams:
    """Rows ``offset .. offset + batch_size`` of parameters drawn for a global batch (:meth:`MixParams.rows`).

    ``index`` keeps pointing into the global batch (pass it as ``partner``); the region, if any,
    is sliced by the region itself, so every region type shards without code here.
    """
    return params.rows(offset, offset + batch_size)


def _generator_digest(generator: torch.Generator) -> int:
    return zlib.crc32(bytes(generator.get_state().cpu().tolist()))  # a uint8 tensor; no numpy needed


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
        if keeps_label_state(transform):
            raise ValueError(f"GlobalMixer cannot shard {type(transform).__name__}: its labels carry state beyond this "
                             "batch's y (earlier batches' labels), which no rank's slice of the gathered labels holds; "
                             "use it per rank (mixer(x, y) on each rank's batch)")
        if transform.generator is None:
            raise ValueError("transform.generator must be a torch.Generator seeded identically on every rank, got None")
        if getattr(transform, "inplace", False):
            raise ValueError("GlobalMixer needs transform.inplace=False (the partner rows live in the gathered copy)")
        self.transform = transform
        self._check = bool(check_generator)

    def _verify_generator(self) -> None:
        self._check = False
        if len(set(_all_gather_int(_generator_digest(self.transform.generator)))) != 1:
            raise ValueError("GlobalMixer: the transform's generator differs between ranks; seed it identically "
                             "on every rank (e.g. torch.Generator().manual_seed(run_seed))")

    def sample(self, x, sizes: list[int], global_y=None) -> tuple[MixParams, object]:
        """Gather ``x`` and draw the global params (from the gathered labels ``global_y`` too, for methods whose
        draw reads them: Remix's balanced partners, C-Mixup's kernel, PuzzleMix's saliency).

        Returns:
            ``(params, global_x)``: this rank's rows of the global parameters (``index``
            points into the global batch) and the gathered, detached global batch.
        """
        return self._sample(x, sizes, global_y)[:2]

    def _sample(self, x, sizes, global_y):
        if self._check:
            self._verify_generator()
        global_x = gather_batch(x, sizes)
        params = self.transform.sample(global_x, global_y)
        rank = dist.get_rank() if _running() else 0
        start, n = sum(sizes[:rank]), sizes[rank]
        labels = None if global_y is None else local_params(label_params(self.transform, params, global_y), start, n)
        return local_params(params, start, n), global_x, labels

    def __call__(self, x, y=None):
        """Mix this rank's batch. Returns ``(mixed_x, MixedTarget)``, or ``mixed_x`` without ``y``."""
        leaf = first_leaf(x)
        if not isinstance(leaf, torch.Tensor) or leaf.ndim == 0:
            raise TypeError("x must be a tensor or nested batch of tensors with a leading batch dimension")
        sizes = gather_sizes(leaf.shape[0])
        global_y = None if y is None else gather_batch(y, sizes)
        params, global_x, y_params = self._sample(x, sizes, global_y)
        # The gathered batch is the partner batch; params.index points into it.
        mixed = mix(x, params, partner=global_x)
        if y is None:
            return mixed
        target = MixedTarget(y, y_params, partner=global_y, num_classes=self.transform.num_classes,
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
            ``num_classes``, ``label_smoothing``); k-way parameters shard too (column 0 renumbered to the local rows).
    """
    from .transforms import MixUp

    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed= or generator= (identical on every rank)")
    if seed is not None:
        generator = torch.Generator(device=get_info().device).manual_seed(_check_index("seed", seed))
    return GlobalMixer(MixUp(alpha, mode=mode, generator=generator, **kwargs))
