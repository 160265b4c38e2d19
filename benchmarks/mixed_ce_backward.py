"""Mixed cross-entropy: the forms mixlab could use for its fused class-index route, beside plain CE.

Why ``mixlab.losses.mixed_cross_entropy`` uses the form it uses (docs/DESIGN-NOTES.md):
``python benchmarks/mixed_ce_backward.py`` prints, for forward + backward (``autograd.grad``, as
``mixlab bench`` times it) at B 256, C 1000, the minimum and median over interleaved rounds of:
plain ``F.cross_entropy``; the autograd form (log_softmax, gather, one dot); a one-node
``autograd.Function`` whose backward is ``exp(logp) * sum(coef) - scatter(coef)``; and the
paper's two cross-entropy calls.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mixlab.losses import _WeightedNLL as OneNode  # the one-node form mixlab uses


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(a.batch, a.classes, generator=g, requires_grad=True)
    y = torch.randint(0, a.classes, (a.batch,), generator=g)
    y_b = y[torch.randperm(a.batch, generator=g)]
    lam = torch.rand(a.batch, generator=g)
    t, w = torch.stack([y, y_b], 1), torch.stack([lam, 1 - lam], 1)
    coefn = (w / -w.sum()).contiguous()

    def autograd_form():
        return torch.dot(coefn.reshape(-1), F.log_softmax(logits, 1).gather(1, t).reshape(-1))

    def paper():
        return (lam * F.cross_entropy(logits, y, reduction="none")
                + (1 - lam) * F.cross_entropy(logits, y_b, reduction="none")).mean()

    forms = {"plain CE": lambda: F.cross_entropy(logits, y), "autograd form": autograd_form,
             "one-node Function": lambda: OneNode.apply(logits, t, coefn), "paper (two CE calls)": paper}
    ref = torch.autograd.grad(autograd_form(), logits)[0]
    assert torch.allclose(torch.autograd.grad(OneNode.apply(logits, t, coefn), logits)[0], ref, atol=1e-7)
    times = {k: [] for k in forms}
    for _ in range(a.rounds):
        for name, fn in forms.items():
            t0 = time.perf_counter()
            for _ in range(10):
                torch.autograd.grad(fn(), logits)
            times[name].append((time.perf_counter() - t0) / 10)
    floor = statistics.median(times["plain CE"])
    print(f"B {a.batch}, C {a.classes}, {a.threads} threads, {a.rounds} rounds of 10 calls")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:22s} min {min(ts) * 1e6:7.1f} us  median {med * 1e6:7.1f} us  x plain {med / floor:.2f}")


if __name__ == "__main__":
    main()
