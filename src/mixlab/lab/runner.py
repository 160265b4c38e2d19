"""A lab run: for each seed, one initial model trained once per arm, into a run folder.

Folder layout (every file written atomically)::

    config.json     resolved configuration, data description, versions, git commit, machine
    metrics.jsonl   one line per epoch per arm per seed
    summary.json    final figures per arm and seed, mean/std across seeds, mix-minus-baseline
    report.md       the table and PNG plots (plots/)
    checkpoints/    seed<S>_init.pt and seed<S>_<arm>.pt (after every epoch; --resume reads them)
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from .config import LabConfig
from .distributed import barrier
from .models import build_model, default_model
from .store import atomic_write_json, atomic_write_text, load_checkpoint, provenance, save_checkpoint
from .train import prepare_data, train_arm

__all__ = ["run_lab", "arms_for", "summarize", "METRICS"]

METRICS = ("test_acc", "test_nll", "test_ece", "train_loss", "train_clean_acc", "noisy_memorised")


def arms_for(command: str, cfg: LabConfig) -> list[tuple[str, str]]:
    """``(arm name, mix)`` pairs: ``compare`` trains the baseline and the mix; ``train`` one arm."""
    if command == "compare":
        if cfg.mix == "none":
            raise ValueError("--mix must be mixup, cutmix or mixup-or-cutmix for compare, got 'none'")
        return [("baseline", "none"), (cfg.mix, cfg.mix)]
    return [("baseline" if cfg.mix == "none" else cfg.mix, cfg.mix)]


def load_splits(cfg: LabConfig, seed: int):
    from mixlab.data import load_dataset  # lazy: the data readers need the lab extras

    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, classes=cfg.classes, label_noise=cfg.label_noise,
                        train_size=cfg.train_size, seed=seed, cache_dir=cfg.cache_dir, label_regex=cfg.label_regex,
                        test_fraction=cfg.test_fraction, label_column=cfg.label_column)


def _data_info(splits) -> dict:
    return {"name": splits.name, "source": splits.source, "kind": splits.kind, "classes": list(splits.classes),
            "num_classes": splits.num_classes, "input_shape": list(splits.input_shape),
            "num_train": int(splits.y_train.numel()), "num_test": int(splits.y_test.numel()),
            "num_noisy": None if splits.noisy_mask is None else int(splits.noisy_mask.sum())}


def _prepare_folder(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "config.json").is_file():
            raise ValueError(f"--resume needs an existing run folder in --out, but {out}/config.json is missing")
        return
    ck = out / "checkpoints"
    if ck.is_dir():  # a fresh run in an old folder: drop the old run's checkpoints, nothing else
        for f in ck.glob("seed*.pt"):
            f.unlink()
    for name in ("metrics.jsonl", "summary.json"):
        (out / name).unlink(missing_ok=True)


def _write_metrics(out: Path, histories: dict) -> None:
    lines = [json.dumps({k: v for k, v in rec.items() if k != "ece_bins"})
             for hist in histories.values() for rec in hist]
    atomic_write_text(out / "metrics.jsonl", "".join(line + "\n" for line in lines))


def _initial_weights(cfg: LabConfig, seed: int, input_shape, num_classes, path: Path,
                     main_process: bool = True) -> dict:
    """The seed's initial weights: made once (global generator seeded by ``seed``), saved, reused by every arm.

    Every rank of a torchrun job makes the same weights from the seed; only the main process saves them.
    """
    if path.exists():
        return load_checkpoint(path)["model"]
    torch.manual_seed(seed)
    state = build_model(cfg.model, input_shape, num_classes).state_dict()
    if main_process:
        save_checkpoint(path, {"model": state, "seed": seed, "model_name": cfg.model})
    return state


def _mean_std(values: list) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def summarize(histories: dict, arms: list, seeds: list) -> dict:
    """Final figures per arm and seed, mean/std across seeds, and mix-minus-baseline differences."""
    per_seed = {arm: {} for arm, _ in arms}
    for (seed, arm), hist in histories.items():
        last = hist[-1]
        rec = {k: last[k] for k in METRICS if k in last}
        rec.update(epochs=last["epoch"], best_test_acc=max(r["test_acc"] for r in hist),
                   train_time_s=sum(r["train_time_s"] for r in hist), ece_bins=last["ece_bins"])
        per_seed[arm][str(seed)] = rec
    keys = [k for k in METRICS + ("best_test_acc", "train_time_s")
            if any(k in r for a in per_seed.values() for r in a.values())]
    agg = {arm: {k: _mean_std([r.get(k) for r in per_seed[arm].values()]) for k in keys} for arm in per_seed}
    summary = {"arms": [a for a, _ in arms], "seeds": list(seeds), "per_seed": per_seed, "aggregate": agg}
    if len(arms) == 2:
        base, mixed = arms[0][0], arms[1][0]
        summary["difference"] = {
            "what": f"{mixed} minus {base}, per seed, then mean/std across seeds",
            **{k: _mean_std([per_seed[mixed][s][k] - per_seed[base][s][k] for s in per_seed[base]
                             if s in per_seed[mixed] and per_seed[base][s].get(k) is not None
                             and per_seed[mixed][s].get(k) is not None]) for k in keys},
        }
    return summary


def run_lab(cfg: LabConfig, arms: list[tuple[str, str]], *, resume: bool = False, main_process: bool = True,
            log: Callable[[str], None] = print) -> dict:
    """Train every (seed, arm), write the run folder, and return the summary dict.

    ``resume=True`` skips finished arms and continues unfinished ones from their last
    complete epoch; the figures equal those of an uninterrupted run.
    """
    out = Path(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if main_process:
        _prepare_folder(out, resume)
    barrier()  # under torchrun: no rank looks for checkpoints before rank 0 has cleared old ones
    info = provenance()
    histories: dict = {}
    inits: dict = {}
    t_start = time.perf_counter()
    for i, seed in enumerate(cfg.seeds):
        splits = load_splits(cfg, seed)
        if cfg.model is None:
            cfg.model = default_model(splits.kind)
        if i == 0 and main_process:
            atomic_write_json(out / "config.json", {"config": cfg.to_dict(), "arms": [a for a, _ in arms],
                                                     "data": _data_info(splits), **info})
        data = prepare_data(splits, cfg, cfg.device)
        init = _initial_weights(cfg, seed, data.input_shape, data.num_classes,
                                out / "checkpoints" / f"seed{seed}_init.pt", main_process)
        for arm, mix in arms:
            model = build_model(cfg.model, data.input_shape, data.num_classes)
            model.load_state_dict(init)

            def on_epoch(hist, key=(seed, arm)):
                histories[key] = hist
                _write_metrics(out, histories)
                last = hist[-1]
                log(f"seed {seed} {arm:>16} epoch {last['epoch']:>3}/{cfg.epochs}: test acc {last['test_acc']:.4f}  "
                    f"nll {last['test_nll']:.4f}  ece {last['test_ece']:.4f}  train loss {last['train_loss']:.4f}  "
                    f"({last['epoch_time_s']:.1f}s)")

            hist, init_hash = train_arm(cfg, data, model, seed=seed, arm=arm, mix=mix,
                                        ckpt_path=out / "checkpoints" / f"seed{seed}_{arm}.pt",
                                        main_process=main_process, on_epoch=on_epoch)
            histories[(seed, arm)] = hist
            inits.setdefault(arm, {})[str(seed)] = init_hash
    summary = summarize(histories, arms, cfg.seeds)
    summary["init_sha256"] = inits
    summary["wall_time_s_this_invocation"] = time.perf_counter() - t_start
    if main_process:
        _write_metrics(out, histories)
        atomic_write_json(out / "summary.json", summary)
        from .report import write_report  # lazy: matplotlib

        write_report(out, cfg, summary, histories, data)
    return summary
