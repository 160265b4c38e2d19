"""SaliencyMix (Uddin et al. 2021, "SaliencyMix: A Saliency Guided Data Augmentation Strategy for
Better Regularization"; official code afm-shahab-uddin/SaliencyMix): a CutMix box of side
``sqrt(1 - lam)`` centred on the peak of the partner's saliency map, here the spectral-residual
saliency (Hou and Zhang 2007, OpenCV's ``StaticSaliencySpectralResidual``) computed in torch for
the whole batch at once, on the device.

Convention: ``lam`` weights the original row: the exact share outside the box.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _fast
from .. import _validate as V
from ..mixer import Mixer
from ..regions import Box
from ..registry import register

__all__ = ["SaliencyMix", "spectral_saliency"]


def _saliency_gauss(device) -> torch.Tensor:
    """OpenCV's 5-tap Gaussian (sigma 8), computed on ``device``."""
    k = torch.arange(5, dtype=torch.float32, device=device) - 2
    g = torch.exp(-(k ** 2) / (2 * 8.0 ** 2))
    return g / g.sum()


def spectral_saliency(x: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Spectral-residual saliency (Hou and Zhang 2007) of a batch of images, as OpenCV computes it.

    The grey image is resized to ``size x size``; the log amplitude spectrum minus its 3x3 box
    average (the spectral residual) is recombined with the phase; the inverse transform's
    magnitude is smoothed by a Gaussian (5x5, sigma 8), squared and resized back (the order of
    OpenCV's ``computeSaliencyImpl``).

    Speed (same bits as the plain form: ``avg_pool2d`` of the reflect-padded log amplitude, two
    ``conv2d`` for the Gaussian, ``interpolate`` both ways; ``tests/methods/test_methods.py`` checks the
    equality): a resize to the same size is the identity and is skipped; the box filter and the
    Gaussian run through :func:`mixlab._fast.box_mean3` and :func:`mixlab._fast.gauss5`.

    Args:
        x: ``(B, C, H, W)`` images (any real dtype).

    Returns:
        float32 ``(B, H, W)`` saliency (larger = more salient).
    """
    B, _, H, W = x.shape
    if B == 0:  # the FFT backends refuse empty transforms
        return torch.zeros(0, H, W, device=x.device)
    s = size
    grey = x.float().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    if (H, W) != (s, s):  # bilinear to the same size is the identity
        grey = F.interpolate(grey, size=(s, s), mode="bilinear", align_corners=False)
    spec = torch.fft.fft2(grey[:, 0])  # (B, s, s)
    log_amp = spec.abs().clamp_(min=1e-12).log_()
    padded = F.pad(log_amp[:, None], (1, 1, 1, 1), mode="reflect")
    avg = _fast.box_mean3(padded)  # avg_pool2d(3, stride 1), by the door's fastest form
    residual = torch.polar(log_amp.sub_(avg).exp_(), torch.angle(spec))
    mag = torch.fft.ifft2(residual).abs()  # (B, s, s)
    mag = F.pad(mag[:, None], (2, 2, 2, 2), mode="reflect")
    sal = _fast.gauss5(mag, _saliency_gauss(x.device))  # separable 5x5 Gaussian, sigma 8
    sal = sal.mul_(sal)  # squared
    if (H, W) != (s, s):
        sal = F.interpolate(sal[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    return sal


@register("saliencymix", inputs=("images",),
          when="Images where a random box often lands on background: the box holds the partner's salient object.")
class SaliencyMix(Mixer):
    """SaliencyMix (Uddin et al. 2021): a CutMix box centred on the partner's saliency peak.

    ``lam ~ Beta(alpha, alpha)``; the box side is ``int(S * sqrt(1 - lam))`` per dim, centred on
    the argmax of the partner's spectral-residual saliency, ends clipped to the image (the
    official ``saliency_bbox``); ``lam`` is then the exact kept area. The partner's content is
    pasted at the same place (like CutMix), so masks and dense targets follow the box.

    Args:
        alpha: Beta concentration; default 1.0 (the paper's).
        mode: ``"batch"`` (one box from the first partner's saliency, as the official code) or
            ``"sample"`` (each row's box from its own partner).
        Shared options: see :class:`mixlab.Mixer` (2-D images ``(B, C, H, W)`` only).
    """

    def __init__(self, alpha=1.0, **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)

    def draw(self, leaf, lam, index, g, *, y=None):
        B, device = leaf.shape[0], leaf.device
        if leaf.ndim != 4:
            raise ValueError(f"SaliencyMix needs images shaped (B, C, H, W), got shape {tuple(leaf.shape)}")
        shape = tuple(leaf.shape[-2:])
        n = self.distinct(B)
        sal = spectral_saliency(leaf.index_select(0, index[:n]))  # (n, H, W): the partners' saliency
        peak = sal.flatten(1).argmax(dim=1)  # (n,)
        centre = torch.stack([peak // shape[1], peak % shape[1]], dim=1)  # (n, 2)
        sizes = _fast.consts(shape, device=device, dtype=torch.int64)  # no host-to-device copy
        cut = torch.floor(torch.sqrt(1 - lam[:n].double())[:, None] * sizes).long()  # (n, 2)
        lo = (centre - cut // 2).clamp(min=0)
        hi = torch.minimum(centre + cut // 2, sizes)
        box = torch.stack([lo, torch.maximum(lo, hi)], dim=2)  # (n, 2, 2)
        if n != B:
            box = box.expand(B, -1, -1).contiguous()
        return Box(box, shape)
