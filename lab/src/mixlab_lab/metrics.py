"""Evaluation metrics as sums and counts (reducible across processes), then finalised to floats.

``evaluate`` returns a dict of tensors: ``correct``, ``nll_sum``, ``count`` and 15 equal-width
confidence bins (``bin_count``, ``bin_conf``, ``bin_correct``) for the expected calibration
error, and ``nonfinite``, the rows whose probabilities hold a NaN or an infinity; ``finalize``
turns them into accuracy, NLL and ECE.

Non-finite probabilities (a diverged model's NaN or infinite logits): such a row counts as a
wrong prediction in the accuracy, and is kept out of the NLL sum and the calibration bins; if
any row of the evaluation was non-finite, ``finalize`` reports ``nll`` and ``ece`` as NaN (they
are undefined, and a number computed from the finite rows alone would look like a result) and
the count as ``nonfinite``. The lab's training loop stops such an arm as diverged.
"""
from __future__ import annotations

import torch

__all__ = ["N_BINS", "probabilities", "batch_stats", "add_stats", "finalize", "ece_from_bins", "memorisation",
           "finalize_memorisation"]

N_BINS = 15


def probabilities(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Class probabilities ``(B, C)``: softmax for ``ce``; normalised sigmoids for ``bce`` (article 000)."""
    if loss == "bce":
        p = torch.sigmoid(logits.float())
        return p / p.sum(1, keepdim=True).clamp_min(1e-12)
    return torch.softmax(logits.float(), 1)


def batch_stats(probs: torch.Tensor, y: torch.Tensor) -> dict:
    """Sums over one batch: correct predictions, NLL, count, calibration bins and non-finite rows.

    A row with a NaN or infinite probability is wrong, and adds nothing to ``nll_sum`` or the bins.
    """
    finite = torch.isfinite(probs).all(1)                                     # (B,)
    safe = torch.where(finite[:, None], probs, torch.zeros_like(probs))       # (B, C) no NaN reaches max/log
    conf, pred = safe.max(1)                                                  # (B,), (B,)
    correct = ((pred == y) & finite).double()
    keep = finite.double()
    nll = -torch.log(safe.gather(1, y[:, None]).squeeze(1).clamp_min(1e-12)).double() * keep
    bins = torch.clamp((conf * N_BINS).long(), min=0, max=N_BINS - 1)        # (B,) equal-width bins
    zeros = torch.zeros(N_BINS, dtype=torch.float64, device=probs.device)
    return {
        "correct": correct.sum(), "nll_sum": nll.sum(),
        "count": torch.tensor(float(y.numel()), dtype=torch.float64, device=probs.device),
        "bin_count": zeros.index_add(0, bins, keep),
        "bin_conf": zeros.index_add(0, bins, conf.double() * keep),
        "bin_correct": zeros.index_add(0, bins, correct),
        "nonfinite": (1.0 - keep).sum(),
    }


def add_stats(total: dict | None, new: dict) -> dict:
    if total is None:
        return {k: v.clone() for k, v in new.items()}
    return {k: total[k] + new[k] for k in total}


def ece_from_bins(bin_count, bin_conf, bin_correct) -> float:
    """ECE = sum_b (n_b / n) * |acc_b - conf_b| over the 15 equal-width confidence bins."""
    n = float(sum(bin_count))
    if n == 0:
        return float("nan")
    return float(sum(abs(c - k) for c, k in zip(bin_correct, bin_conf)) / n)


def finalize(stats: dict) -> dict:
    """Accuracy, NLL and ECE (floats), the bins (lists, for reliability diagrams) and ``nonfinite``.

    With any non-finite row, ``nll`` and ``ece`` are NaN (undefined) and ``acc`` counts those rows wrong.
    """
    s = {k: v.detach().cpu().tolist() for k, v in stats.items()}
    n = s["count"]
    bad = int(s.get("nonfinite", 0))
    return {
        "acc": s["correct"] / n if n else float("nan"),
        "nll": s["nll_sum"] / n if n and not bad else float("nan"),
        "ece": ece_from_bins(s["bin_count"], s["bin_conf"], s["bin_correct"]) if not bad else float("nan"),
        "bins": {"count": s["bin_count"], "conf": s["bin_conf"], "correct": s["bin_correct"]},
        "nonfinite": bad,
    }


def memorisation(probs: torch.Tensor, y_noisy: torch.Tensor, y_clean: torch.Tensor, noisy: torch.Tensor) -> dict:
    """Sums for the corrupted-label experiment: accuracy against clean labels, noisy labels fitted."""
    finite = torch.isfinite(probs).all(1)                                     # a NaN row predicts nothing
    pred = torch.where(finite[:, None], probs, torch.zeros_like(probs)).argmax(1)
    noisy = noisy.double()
    return {
        "clean_correct": ((pred == y_clean) & finite).double().sum(),
        "noisy_fit": (((pred == y_noisy) & finite).double() * noisy).sum(),
        "noisy_count": noisy.sum(),
        "count": torch.tensor(float(y_clean.numel()), dtype=torch.float64, device=probs.device),
    }


def finalize_memorisation(stats: dict) -> dict:
    s = {k: float(v) for k, v in stats.items()}
    return {
        "train_clean_acc": s["clean_correct"] / s["count"],
        "noisy_memorised": s["noisy_fit"] / s["noisy_count"] if s["noisy_count"] else float("nan"),
    }
