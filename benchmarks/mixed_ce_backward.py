"""Mixed cross-entropy: autograd's backward against a hand-written one, beside plain CE.

Why ``mixlab.losses.mixed_cross_entropy`` keeps autograd's backward (docs/DESIGN-NOTES.md):
``python benchmarks/mixed_ce_backward.py`` prints the minimum over interleaved rounds of
forward + backward at B 256, C 1000, one thread.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


class HandWritten(torch.autograd.Function):
    """``-sum_j coef_j * log_softmax(z)[t_j]`` with the backward ``sum(q) * softmax(z) - q``."""

    @staticmethod
    def forward(ctx, logits, t, coef):
        logp = F.log_softmax(logits, dim=1)
        ctx.save_for_backward(logp, t, coef)
        return -(coef * logp.gather(1, t)).sum(1)

    @staticmethod
    def backward(ctx, grad_out):
        logp, t, coef = ctx.saved_tensors
        grad = torch.exp(logp).mul_(coef.sum(1, keepdim=True))
        grad.scatter_add_(1, t, -coef)
        return grad.mul_(grad_out[:, None]), None, None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(a.batch, a.classes, generator=g, requires_grad=True)
    t = torch.randint(0, a.classes, (a.batch, 2), generator=g)
    coef = torch.rand(a.batch, 2, generator=g)

    def autograd_form():
        (-(coef * F.log_softmax(logits, 1).gather(1, t)).sum(1)).sum().backward()

    rows = {"plain CE": lambda: F.cross_entropy(logits, t[:, 0]).backward(),
            "hand-written backward": lambda: HandWritten.apply(logits, t, coef).sum().backward(),
            "autograd form": autograd_form}
    times = {k: [] for k in rows}
    for _ in range(a.rounds):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            times[name].append((time.perf_counter() - t0) / 20)
    for name, ts in times.items():
        print(f"{name:24s} min {min(ts) * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
