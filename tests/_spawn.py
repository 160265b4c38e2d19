"""Shared by the DDP tests: start spawned processes, wait for them up to a deadline, kill what hangs."""
from __future__ import annotations

import time


def run_to_deadline(procs, deadline_s: float) -> None:
    """Start ``procs``, join them within ``deadline_s`` in all, kill any still running and fail naming them."""
    for p in procs:
        p.start()
    end = time.monotonic() + deadline_s
    try:
        for p in procs:
            p.join(max(0.0, end - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    assert not hung, f"ranks {hung} still running after {deadline_s} s"
