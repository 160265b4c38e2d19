"""CutMix on 1-D signals ``(B, C, T)``: a small 1-D CNN classifying noisy waveforms, with and without CutMix.

Run:  python examples/signals_cutmix1d.py --epochs 15
Fast: python examples/signals_cutmix1d.py --fast

The data are synthetic, generated with a seeded generator (no download): four waveform
classes (sine, square, sawtooth, a rising chirp), random frequency, phase, amplitude and
additive noise, two channels (the signal and a noisier copy, as a stereo recording would
have). ``mixlab.CutMix`` cuts along the time axis for ``(B, C, T)`` input: a segment of the
partner replaces the same segment of the original, and ``lam`` is the exact fraction of the
time steps kept, so the target weights the classes by how much of each signal is present.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mixlab  # noqa: E402
from _loop import compare, example_parser, parse, print_results  # noqa: E402

CLASSES = ("sine", "square", "sawtooth", "chirp")


def make_signals(n: int, length: int = 256, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` signals ``(n, 2, length)`` float32 and their classes ``(n,)`` int64."""
    g = generator
    y = torch.randint(len(CLASSES), (n,), generator=g)
    t = torch.linspace(0, 1, length)[None, :]  # (1, T)
    freq = 3 + 9 * torch.rand(n, 1, generator=g)  # cycles per window
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    amp = 0.5 + torch.rand(n, 1, generator=g)
    cycles = freq * t + phase / (2 * math.pi)  # (n, T)
    waves = torch.stack([
        torch.sin(2 * math.pi * cycles),
        torch.sign(torch.sin(2 * math.pi * cycles)),
        2 * (cycles - torch.floor(cycles + 0.5)),
        torch.sin(2 * math.pi * (freq * t + 0.5 * freq * t ** 2) + phase),
    ])  # (4, n, T)
    x = amp * waves[y, torch.arange(n)]  # (n, T)
    noise = torch.randn(n, 2, length, generator=g)
    x = torch.stack([x, x], 1) + noise * torch.tensor([0.3, 0.6]).view(1, 2, 1)  # (n, 2, T)
    return x, y


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 16, 7, padding=3), nn.ReLU(), nn.MaxPool1d(4),
        nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(4),
        nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
        nn.Flatten(), nn.Linear(32, len(CLASSES)),
    )


def main(argv=None) -> dict:
    p = example_parser(__doc__, epochs=15, alpha=1.0)
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--test", type=int, default=1000)
    args = parse(p, argv)
    n_train, n_test, epochs = (600, 300, 4) if args.fast else (args.train, args.test, args.epochs)
    g = torch.Generator().manual_seed(args.seed)
    train, test = make_signals(n_train, generator=g), make_signals(n_test, generator=g)
    criterion = nn.CrossEntropyLoss()
    cutmix = mixlab.CutMix(args.alpha, mode="sample", generator=torch.Generator().manual_seed(args.seed))

    def plain(model, xb, yb):
        return criterion(model(xb), yb)

    def mixed(model, xb, yb):
        xb, target = cutmix(xb, yb)  # (B, 2, T): one time segment per row replaced by its partner's
        return target.loss(criterion, model(xb))

    results = compare(make_model, train, test, {"baseline": plain, "cutmix1d": mixed}, epochs=epochs,
                      batch_size=64, lr=3e-3, seed=args.seed)
    print_results(f"synthetic waveforms (B, 2, 256): {n_train} train / {n_test} test, {epochs} epochs", results)
    return results


if __name__ == "__main__":
    main()
