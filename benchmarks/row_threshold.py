"""Where the per-row CPU loop starts to beat the vectorised gather + lerp (sets ROW_LOOP_MIN_NUMEL).

For a 64 MB-ish batch split into rows of growing size, times (median of interleaved rounds)
the out-of-place forms ("rows": per-row lerp, "vector": gather then lerp) and the in-place
forms ("cycles": cycle walk with one spare row, "vector": gather, lerp, copy back), float32
and uint8.

    python benchmarks/row_threshold.py [--runs 9] [--total 4000000]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mixlab import _fast


def timed(fns: dict, runs: int) -> dict:
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--total", type=int, default=4_000_000, help="elements per batch")
    ns = ap.parse_args()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; median of {ns.runs} rounds, ms")
    print(f"{'dtype':>8} {'row numel':>10} {'B':>6} {'rows':>8} {'vector':>8} {'cycles':>8} {'vec in pl':>10}")
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.uint8):
        for row in (256, 1024, 3072, 4096, 8192, 16384, 65536):
            B = max(2, ns.total // row)
            x = torch.rand(B, row, generator=g)
            x = (x * 255).to(torch.uint8) if dtype == torch.uint8 else x
            lam, index = torch.rand(B, generator=g), torch.randperm(B, generator=g)
            work = x.clone()
            kernel = _fast._RowLerp(x[0])

            def rows():
                out = torch.empty_like(x)
                xs, os_ = x.unbind(0), out.unbind(0)
                for i, (j, w) in enumerate(zip(index.tolist(), lam.tolist())):
                    kernel(xs[j], xs[i], w, os_[i])
                return out

            old = _fast.ROW_LOOP_MIN_NUMEL
            try:
                _fast.ROW_LOOP_MIN_NUMEL = 0  # force the cycle walk
                cycles = lambda: _fast.lerp_perm_inplace(work, lam, index)  # noqa: E731
                t = timed({"rows": rows, "vector": lambda: _fast._vector_lerp_gather(x, x, lam, index),
                           "cycles": cycles,
                           "vec_ip": lambda: work.copy_(_fast._vector_lerp_gather(work, work, lam, index))}, ns.runs)
            finally:
                _fast.ROW_LOOP_MIN_NUMEL = old
            print(f"{str(dtype)[6:]:>8} {row:>10} {B:>6} {t['rows']:>8.2f} {t['vector']:>8.2f} "
                  f"{t['cycles']:>8.2f} {t['vec_ip']:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
