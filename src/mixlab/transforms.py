"""``MixUp``, ``CutMix`` and ``MixUpOrCutMix``: thin callables whose state is their configuration.

Calling one with ``(x, y)`` draws a :class:`MixParams` (the only random step), mixes ``x``
(a tensor or nested batch) and returns ``(mixed_x, MixedTarget)``. ``.sample(x)`` draws the
parameters alone, for mixing side tensors with the same randomness.

Convention: ``lam`` weights the original row (the paper, timm); rows are paired by a random
permutation unless ``pairing`` says otherwise. timm's option names are accepted where they
mean the same thing: ``mixup_alpha``, ``cutmix_alpha``, ``prob``, ``switch_prob``,
``mode`` (``"batch"``, ``"elem"``, ``"pair"``), ``correct_lam``, ``label_smoothing``,
``num_classes``.
"""
from __future__ import annotations

import torch

from ._tree import first_leaf
from .ops import mix
from .params import MixParams, check_mode, sample_box, sample_params
from .pairing import check_pairing, partner_index
from .sampling import check_alpha, check_probability, sample_beta
from .targets import MixedTarget, _check_num_classes, _check_smoothing

__all__ = ["MixUp", "CutMix", "MixUpOrCutMix", "mix_pair"]


def _alias(value, alias, name, alias_name, default):
    if alias is not None:
        if value is not None:
            raise ValueError(f"pass either {name} or {alias_name} (its timm name), not both")
        return alias
    return default if value is None else value


def _batch_info(x) -> tuple[int, torch.device, torch.Tensor]:
    leaf = first_leaf(x)
    if not isinstance(leaf, torch.Tensor):
        raise TypeError(f"x must be a tensor or a nested batch of tensors, got first leaf {type(leaf).__name__}")
    if leaf.ndim == 0:
        raise ValueError("x is a 0-dim tensor; mixing needs a leading batch dimension")
    return leaf.shape[0], leaf.device, leaf


class _Mixer:
    def __init__(self, *, generator, num_classes, label_smoothing, inplace):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator
        self.num_classes = _check_num_classes(num_classes)
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.inplace = bool(inplace)

    def sample(self, x) -> MixParams:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_box_options(self, mode, pairing, correct_lam, box_dims) -> None:
        """Options shared by the transforms that cut boxes (CutMix, MixUpOrCutMix)."""
        self.mode = check_mode(mode)
        if self.mode == "pair":
            raise ValueError(f"{type(self).__name__} supports mode 'batch' or 'sample', got 'pair'")
        self.pairing = check_pairing(pairing)
        self.correct_lam = bool(correct_lam)
        self.box_dims = box_dims

    def __call__(self, x, y=None):
        """Mix a batch. Returns ``(mixed_x, MixedTarget)``, or ``mixed_x`` alone when ``y`` is None."""
        params = self.sample(x)
        mixed = mix(x, params, inplace=self.inplace)
        if y is None:
            return mixed
        target = MixedTarget(y, params, num_classes=self.num_classes, label_smoothing=self.label_smoothing)
        return mixed, target


class MixUp(_Mixer):
    """Mixup (Zhang et al. 2018): ``x = lam * x + (1 - lam) * x[index]``, ``lam ~ Beta(alpha, alpha)``.

    Args:
        alpha: Beta concentration (timm: ``mixup_alpha``); 0 disables mixing. Default 1.0 (the
            paper's CIFAR setting, timm, torchvision); fastai uses 0.4, the Keras article 0.2.
        mode: ``"batch"`` (one lambda per batch, the paper), ``"sample"``/``"elem"`` (one per
            row, fastai) or ``"pair"`` (one per flip pair, timm).
        keep_dominant: fastai's ``lam = max(lam, 1 - lam)``.
        p: probability that a row is mixed at all (timm: ``prob``).
        pairing: ``"permutation"``, ``"flip"`` or ``"roll"``.
        k: rows per mix; ``k > 2`` draws Dirichlet(alpha) weights.
        generator: random generator on the batch's device.
        num_classes, label_smoothing: defaults for the returned target's ``.soft()``.
        inplace: overwrite the caller's batch instead of allocating a new one.

    Example:
        >>> import torch, mixlab
        >>> mixup = mixlab.MixUp(alpha=0.4, mode="sample", generator=torch.Generator().manual_seed(0))
        >>> x, target = mixup(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> x.shape, target.soft(num_classes=10).shape
        (torch.Size([8, 3, 32, 32]), torch.Size([8, 10]))
    """

    def __init__(self, alpha=None, *, mode="batch", keep_dominant=False, p=None, pairing="permutation", k=2,
                 generator=None, num_classes=None, label_smoothing=0.0, inplace=False,
                 mixup_alpha=None, prob=None):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace)
        self.alpha = check_alpha(_alias(alpha, mixup_alpha, "alpha", "mixup_alpha", 1.0))
        self.p = check_probability(_alias(p, prob, "p", "prob", 1.0))
        self.mode = check_mode(mode)
        self.keep_dominant = bool(keep_dominant)
        self.pairing = check_pairing("flip" if self.mode == "pair" and pairing == "permutation" else pairing)
        self.k = k
        sample_params(0, alpha=self.alpha, mode=self.mode, p=self.p, pairing=self.pairing, k=k)  # validate

    def sample(self, x) -> MixParams:
        B, device, _ = _batch_info(x)
        return sample_params(B, alpha=self.alpha, mode=self.mode, keep_dominant=self.keep_dominant, p=self.p,
                             pairing=self.pairing, k=self.k, generator=self.generator, device=device)

    def __repr__(self):
        return (f"MixUp(alpha={self.alpha}, mode={self.mode!r}, keep_dominant={self.keep_dominant}, "
                f"p={self.p}, pairing={self.pairing!r}, k={self.k})")


def _box_shape(leaf: torch.Tensor, box_dims) -> tuple:
    D = leaf.ndim - 2 if box_dims is None else box_dims
    if isinstance(D, bool) or not isinstance(D, int) or D < 1 or D > leaf.ndim - 1:
        raise ValueError(
            f"CutMix needs inputs shaped (B, C, *spatial) with 1 to 3 spatial dims (or box_dims set), "
            f"got shape {tuple(leaf.shape)} with box_dims={box_dims!r}"
        )
    return tuple(leaf.shape[-D:])


def _cut_params(lam, B, box_shape, mode, correct_lam, generator, device):
    """Boxes for the requested ``lam`` ``(B,)``: one shared box in batch mode, else one per row."""
    if mode == "batch":
        box, lam_c = sample_box(lam[:1], box_shape, generator=generator)
        box, lam_c = box.expand(B, -1, -1).contiguous(), lam_c.expand(B).contiguous()
    else:
        box, lam_c = sample_box(lam, box_shape, generator=generator)
    return box, (lam_c if correct_lam else lam)


class CutMix(_Mixer):
    """CutMix (Yun et al. 2019): paste a box of the partner into each row, on 1-D, 2-D or 3-D data.

    The box's volume fraction is ``1 - lam`` (up to rounding and clipping) and, with
    ``correct_lam=True`` (default), the returned ``lam`` is exactly ``1 - pasted / total``.
    The last ``box_dims`` dimensions are cut (default: all but batch and channel, so
    ``(B, C, T)`` audio, ``(B, C, H, W)`` images and ``(B, C, D, H, W)`` volumes all work).

    Args:
        alpha: Beta concentration (timm: ``cutmix_alpha``); default 1.0 (the CutMix paper).
        mode: ``"batch"`` (one box for the batch, as timm and torchvision) or ``"sample"``/
            ``"elem"`` (one box per row).
        correct_lam: set ``lam`` to the exact pasted fraction. ``False`` keeps the drawn
            value (timm's option), which mislabels clipped boxes; kept only for comparison.
        Other arguments as :class:`MixUp`.

    Example:
        >>> import torch, mixlab
        >>> audio = torch.randn(4, 1, 16000)                      # (B, C, T): CutMix along time
        >>> mixed, target = mixlab.CutMix(alpha=1.0, mode="sample")(audio, torch.tensor([0, 1, 2, 3]))
        >>> mixed.shape, target.params.box.shape
        (torch.Size([4, 1, 16000]), torch.Size([4, 1, 2]))
    """

    def __init__(self, alpha=None, *, mode="batch", p=None, pairing="permutation", generator=None,
                 num_classes=None, label_smoothing=0.0, correct_lam=True, box_dims=None, inplace=False,
                 cutmix_alpha=None, prob=None):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace)
        self.alpha = check_alpha(_alias(alpha, cutmix_alpha, "alpha", "cutmix_alpha", 1.0))
        self.p = check_probability(_alias(p, prob, "p", "prob", 1.0))
        self._set_box_options(mode, pairing, correct_lam, box_dims)

    def sample(self, x) -> MixParams:
        B, device, leaf = _batch_info(x)
        shape = _box_shape(leaf, self.box_dims)
        base = sample_params(B, alpha=self.alpha, mode=self.mode, p=self.p, pairing=self.pairing,
                             generator=self.generator, device=device)
        box, lam = _cut_params(base.lam, B, shape, self.mode, self.correct_lam, self.generator, device)
        return MixParams(lam, base.index, box, shape)

    def __repr__(self):
        return f"CutMix(alpha={self.alpha}, mode={self.mode!r}, p={self.p}, pairing={self.pairing!r})"


class MixUpOrCutMix(_Mixer):
    """Either MixUp or CutMix, chosen with probability ``switch_prob`` for CutMix (timm's ``Mixup``).

    In ``"batch"`` mode one choice is made for the whole batch; in ``"sample"``/``"elem"``
    mode each row chooses, and both kinds of row share one call (MixUp rows carry an empty
    box and ``MixParams.linear``). The choice is drawn on the device: no host sync.

    Args:
        mixup_alpha, cutmix_alpha: Beta concentrations; 0 turns that branch off.
        switch_prob: probability of CutMix when both are on.
        prob: probability that a row (batch, in batch mode) is mixed at all.
        Other arguments as :class:`MixUp` and :class:`CutMix`.
    """

    def __init__(self, mixup_alpha=1.0, cutmix_alpha=1.0, *, switch_prob=0.5, prob=1.0, mode="batch",
                 pairing="permutation", generator=None, num_classes=None, label_smoothing=0.0,
                 correct_lam=True, box_dims=None, inplace=False):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace)
        self.mixup_alpha = check_alpha(mixup_alpha, "mixup_alpha")
        self.cutmix_alpha = check_alpha(cutmix_alpha, "cutmix_alpha")
        self.switch_prob = check_probability(switch_prob, "switch_prob")
        self.prob = check_probability(prob, "prob")
        self._set_box_options(mode, pairing, correct_lam, box_dims)

    def sample(self, x) -> MixParams:
        B, device, leaf = _batch_info(x)
        shape = _box_shape(leaf, self.box_dims)
        g = self.generator
        ar = torch.arange(B, device=device)
        if B <= 1 or self.prob == 0 or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return MixParams(torch.ones(B, device=device), ar)
        n = 1 if self.mode == "batch" else B
        ones = torch.ones(n, device=device)
        lam_mix = sample_beta(n, self.mixup_alpha, generator=g, device=device) if self.mixup_alpha > 0 else ones
        lam_cut = sample_beta(n, self.cutmix_alpha, generator=g, device=device) if self.cutmix_alpha > 0 else ones
        if self.mixup_alpha == 0:
            use_cut = torch.ones(n, dtype=torch.bool, device=device)
        elif self.cutmix_alpha == 0:
            use_cut = torch.zeros(n, dtype=torch.bool, device=device)
        else:
            use_cut = torch.rand(n, generator=g, device=device) < self.switch_prob
        if self.prob < 1:
            mixed = torch.rand(n, generator=g, device=device) < self.prob
            lam_mix = torch.where(mixed, lam_mix, ones)
            lam_cut = torch.where(mixed, lam_cut, ones)
        if n == 1:
            lam_mix, lam_cut, use_cut = lam_mix.expand(B), lam_cut.expand(B), use_cut.expand(B)
        box, lam_cut = _cut_params(lam_cut, B, shape, self.mode, self.correct_lam, g, device)
        box = torch.where(use_cut[:, None, None], box, torch.zeros_like(box))  # MixUp rows: empty box
        lam = torch.where(use_cut, lam_cut, lam_mix).contiguous()
        index = partner_index(B, self.pairing, generator=g, device=device)
        return MixParams(lam, index, box, shape, linear=(~use_cut).contiguous())

    def __repr__(self):
        return (f"MixUpOrCutMix(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
                f"switch_prob={self.switch_prob}, prob={self.prob}, mode={self.mode!r})")


def mix_pair(x1, y1, x2, y2, *, alpha: float = 0.2, mode: str = "sample", keep_dominant: bool = False,
             p: float = 1.0, generator=None, num_classes=None, label_smoothing: float = 0.0):
    """Two-stream mixup (the Keras article): row ``i`` of one batch with row ``i`` of another.

    ``mixed = lam * x1 + (1 - lam) * x2`` and the target mixes ``y1`` with ``y2`` likewise;
    the two batches usually come from two independently shuffled loaders over the same data.
    ``lam`` is one per row by default, as in the article.

    Returns:
        ``(mixed_x, MixedTarget)``; the target's ``params.index`` is ``arange(B)`` into ``x2``.
    """
    B, device, _ = _batch_info(x1)
    base = sample_params(B, alpha=alpha, mode=mode, keep_dominant=keep_dominant, p=p, generator=generator,
                         device=device)
    params = MixParams(base.lam, torch.arange(B, device=device))
    mixed = mix(x1, params, partner=x2)
    return mixed, MixedTarget(y1, params, partner=y2, num_classes=num_classes, label_smoothing=label_smoothing)
