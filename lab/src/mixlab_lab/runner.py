"""A lab run: for each seed, one initial model trained once per arm, into a run folder.

Folder layout (every file written atomically)::

    config.json     resolved configuration, data description, versions, git commit, machine
    metrics.jsonl   one line per epoch per arm per seed
    summary.json    final figures per arm and seed, mean/std across seeds, each arm against the
                    baseline (intervals, McNemar, the verdict, warnings: mixlab_lab.stats)
    report.md       the verdict, the tables and PNG plots (plots/)
    predictions/    seed<S>_<arm>.npz (a budget sweep, --epochs 10,30,90: seed<S>_<arm>_e<B>.npz): per test image the predicted class, its probability and the
                    true class's probability (numpy arrays, loaded without pickle; their SHA-256 in
                    summary.json), so every paired test can be recomputed
    checkpoints/    seed<S>_init.pt, seed<S>_<arm>.pt (after every epoch; --resume reads them) and
                    seed<S>_<arm>.prev.pt (the epoch before, the fallback if the latest is damaged); in a
                    budget sweep seed<S>_<arm>_e<B>.pt per budget (and, --budget-mode checkpoints, the shared
                    run's copies seed<S>_<arm>_e<B>.branch.pt that budget B decays from)
    .mixlab-run.json  the marker: this folder is a mixlab run (command, configuration and its hash), and
                    the list of every file the run wrote (each listed before it is written); --overwrite
                    removes exactly those, never through a symbolic link
    .mixlab-lock      while a process owns the folder: its pid and host

What the lab promises about this folder, and which test checks each promise: docs/RELIABILITY.md.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch

import mixlab

from . import budget as B
from .config import ALPHA_FREE, MIXES, LabConfig
from .distributed import broadcast_object
from .models import build_model, default_model
from .store import (CheckpointError, RunError, RunFiles, RunLock, atomic_write_bytes, atomic_write_json,
                    atomic_write_text, check_checkpoint_matches, check_identity, checkpoint_identity,
                    config_sha256, data_fingerprint, is_temporary_of, load_checkpoint, provenance, recording,
                    remove_listed, remove_stale_tmp, save_checkpoint)
from .train import predict, prepare_data, train_arm, weights_sha256

__all__ = ["run_lab", "arms_for", "summarize", "Arm", "METRICS", "MARKER", "LOCK", "save_predictions",
           "load_predictions"]

METRICS = ("test_acc", "test_nll", "test_ece", "train_loss", "train_clean_acc", "noisy_memorised")


class Arm(NamedTuple):
    """One trained configuration: its name (file names, tables), the method and its alpha."""

    name: str
    mix: str
    alpha: float


def arms_for(command: str, cfg: LabConfig) -> list[Arm]:
    """The arms to train: ``compare`` trains the baseline and every (method, alpha) of ``--mix`` x
    ``--alpha`` (methods that draw no lam once); ``train`` one arm.

    Arm names are the method's name, with ``-<alpha>`` appended when ``--alpha`` lists several
    (``:g``, or the exact ``repr`` when ``:g`` would round: ``mixup-0.2``, ``mixup-0.2000001``,
    ``mixup-1e+06``). Names are unique (checkpoints and predictions are named after them); a
    ``ValueError`` refuses a list that would repeat one.
    """
    mixes, alphas = cfg.mixes, cfg.alphas
    if command == "compare":
        methods = [m for m in mixes if m != "none"]
        if not methods:
            raise ValueError(f"--mix must name at least one method besides 'none' for compare (one or more of "
                             f"{[m for m in MIXES if m != 'none']}), got {cfg.mix!r}")
        arms = [Arm("baseline", "none", alphas[0])]
        for m in methods:
            if m in ALPHA_FREE or len(alphas) == 1:
                arms.append(Arm(m, m, alphas[0]))
            else:
                arms += [Arm(f"{m}-{_alpha_label(a)}", m, a) for a in alphas]
        _unique_names(arms)
        return arms
    if len(mixes) > 1 or len(alphas) > 1 or len(cfg.budgets) > 1:
        raise ValueError(f"`mixlab train` trains one arm: give one --mix, one --alpha and one --epochs (got --mix "
                         f"{cfg.mix!r}, --alpha {cfg.alpha!r}, --epochs {cfg.epochs!r}); `mixlab compare` takes lists")
    return [Arm("baseline" if mixes[0] == "none" else mixes[0], mixes[0], alphas[0])]


def _alpha_label(alpha: float) -> str:
    """``alpha`` in an arm name: ``:g`` when it reads back as the same number, else the exact ``repr``."""
    short = f"{alpha:g}"
    return short if float(short) == float(alpha) else repr(float(alpha))


def _unique_names(arms: list) -> None:
    names = [a[0] for a in arms]
    for name in names:
        if names.count(name) > 1 or name == "init":
            raise ValueError(f"--mix/--alpha: two of the runs would be named {name!r} (the initial weights' "
                             f"checkpoint or another arm), and each arm's checkpoints and predictions are named "
                             f"after it; give distinct methods and alphas")


def save_predictions(path: Path, preds: dict) -> str:
    """Write :func:`mixlab_lab.train.predict`'s output as ``.npz`` atomically; returns its SHA-256."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **{k: v.numpy() for k, v in preds.items()})
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_predictions(path: Path, sha256: str | None = None) -> dict:
    """Read a predictions file (no pickle); with ``sha256``, refuse a file whose bytes changed."""
    import numpy as np

    data = Path(path).read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise RunError(f"{path} does not match the SHA-256 recorded in summary.json (damaged or edited)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            out = {k: torch.from_numpy(z[k].copy()) for k in ("pred", "conf", "p_true", "y")}
    except (ValueError, KeyError, OSError) as e:
        raise RunError(f"{path} is not a mixlab predictions file ({e})") from None
    return out


def load_splits(cfg: LabConfig, seed: int):
    from mixlab_lab.data import load_dataset  # lazy: the data readers need the lab extras

    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, classes=cfg.classes, label_noise=cfg.label_noise,
                        train_size=cfg.train_size, seed=seed, imbalance=cfg.imbalance, test_size=cfg.test_size,
                        cache_dir=cfg.cache_dir, label_regex=cfg.label_regex,
                        test_fraction=cfg.test_fraction, label_column=cfg.label_column)


def _data_info(splits) -> dict:
    return {"name": splits.name, "source": splits.source, "kind": splits.kind, "classes": list(splits.classes),
            "num_classes": splits.num_classes, "input_shape": list(splits.input_shape),
            "num_train": int(splits.y_train.numel()), "num_test": int(splits.y_test.numel()),
            "num_noisy": None if splits.noisy_mask is None else int(splits.noisy_mask.sum())}


MARKER = ".mixlab-run.json"
LOCK = ".mixlab-lock"
_RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "report.md")
_PLOTS = ("curves.png", "reliability.png", "beta.png", "mixed_samples.png", "alpha.png", "ranking.png", "budget.png")
_FOLDERS = {"checkpoints": "checkpoints", "predictions": "per-image predictions", "plots": "plots"}
_ROOT_FILES = re.compile("|".join(re.escape(n) for n in _RUN_FILES + (MARKER,)))


def _ours_in_passing(name: str) -> bool:
    """The lock, a lock being recovered, or a temporary file of ours: what a killed run may leave behind."""
    return name == LOCK or name.startswith(LOCK + ".stale.") or is_temporary_of(name, _ROOT_FILES)


def _read_json(path: Path):
    """``(object, None)`` or ``(None, what is wrong)``."""
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, "is missing"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"cannot be read ({type(e).__name__})"


def _legacy_run(out: Path) -> bool:
    """A run folder written before run markers existed: a config.json of the lab's shape."""
    obj, _ = _read_json(out / "config.json")
    return isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "arms" in obj


def _check_folder(out: Path, command: str, cfg: LabConfig, arms: list, *, resume: bool, overwrite: bool) -> dict:
    """Refuse (``RunError``) a run this folder must not take; reads only, changes nothing.

    Returns ``{"clear": bool, "marker_ok": bool}``: whether a previous run's files are to be
    removed (``--overwrite``), and whether the marker is present and readable.
    """
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a folder; nothing was changed")
    marker, _ = _read_json(out / MARKER) if out.is_dir() else (None, "is missing")
    marker_ok = (isinstance(marker, dict) and marker.get("command") in ("compare", "train")
                 and isinstance(marker.get("config"), dict)
                 and marker.get("config_sha256") == config_sha256(marker["config"]))  # else: damaged
    if resume:
        if overwrite:
            raise RunError("--resume continues the run in --out and --overwrite replaces it: give one of them")
        saved, why_saved = _read_json(out / "config.json")
        if not isinstance(saved, dict):
            raise RunError(f"--resume: no run to resume in --out {out} ({out / 'config.json'} {why_saved})")
        kind = marker.get("command") if marker_ok else None
        if kind is None and isinstance(saved.get("arms"), list):
            kind = "compare" if len(saved["arms"]) >= 2 else "train"
        if kind is not None and kind != command:
            raise RunError(f"{out} holds a `mixlab {kind}` run, not a `mixlab {command}` one; continue it with "
                           f"`mixlab {kind} --out {out} --resume`")
        if isinstance(saved.get("arms"), list) and saved["arms"] != [a[0] for a in arms]:
            raise RunError(f"{out}/config.json lists the arms {saved['arms']}, but this command trains "
                           f"{[a[0] for a in arms]}; resume with the command that started the run")
        if marker_ok and cfg.model is not None and marker.get("config_sha256") != config_sha256(cfg.to_dict()):
            kept = marker.get("config") if isinstance(marker.get("config"), dict) else {}
            now = cfg.to_dict()
            diff = sorted(k for k in set(kept) | set(now) if k not in ("quiet", "device", "threads", "out")
                          and kept.get(k) != now.get(k))
            raise RunError(f"{out}/config.json no longer holds the configuration the run began with (recorded in "
                           f"{out / MARKER}; differs in: {', '.join(diff) or 'unknown fields'}); undo the edit, or "
                           f"start a new run (another --out, or --overwrite)")
        return {"clear": False, "marker_ok": marker_ok}
    if not out.exists():
        return {"clear": False, "marker_ok": False}
    others = [p for p in out.iterdir() if not _ours_in_passing(p.name)]
    if not others:
        return {"clear": False, "marker_ok": False}
    if (out / MARKER).exists() or _legacy_run(out):
        if overwrite:
            return {"clear": True, "marker_ok": marker_ok}
        kind = marker.get("command") if marker_ok else None
        cont = (f"continue it with `mixlab {kind} --out {out} --resume`, " if kind else "")
        raise RunError(f"--out {out} already holds a mixlab {kind or ''} run; {cont}replace it with --overwrite, "
                       f"or choose another --out (nothing was changed)".replace("mixlab  run", "mixlab run"))
    raise RunError(f"--out {out} is not empty and is not a mixlab run folder (no {MARKER}); nothing in it was "
                   f"changed: choose a new or empty folder for --out")


def _run_paths(seeds, names, plots=_PLOTS) -> set:
    """The files (relative POSIX paths) a run of these seeds and arm names may write, the marker aside."""
    paths = set(_RUN_FILES) | {f"plots/{p}" for p in plots}
    for s in seeds:
        paths.add(f"checkpoints/seed{s}_init.pt")
        for n in names:
            paths |= {f"checkpoints/seed{s}_{n}.pt", f"checkpoints/seed{s}_{n}.prev.pt", f"predictions/seed{s}_{n}.npz"}
    return paths


def _stems(cfg: LabConfig, arms: list) -> list:
    """The checkpoint / prediction stems of this run: the arm names, or (a budget sweep) ``<arm>_e<B>``."""
    return B.file_stems([a[0] for a in arms], cfg.epochs, cfg.budget_mode)


def _writes(cfg: LabConfig, arms: list, kind: str | None = None) -> set:
    """The files this run will write (plots: those :func:`mixlab_lab.report.write_report` makes for
    these arms; ``mixed_samples.png`` when ``kind`` is known to be ``"image"``)."""
    alphas: dict = {}
    for _, mix, _alpha in arms:
        if mix != "none" and mix not in ALPHA_FREE:
            alphas[mix] = alphas.get(mix, 0) + 1
    plots = ["curves.png", "reliability.png", "beta.png"]
    plots += ["alpha.png"] if len(arms) >= 3 and any(n > 1 for n in alphas.values()) else []
    plots += ["mixed_samples.png"] if kind == "image" else []
    plots += ["budget.png"] if len(cfg.budgets) > 1 and len(arms) >= 2 else []
    return _run_paths(cfg.seeds, _stems(cfg, arms), plots)


def _previous_files(out: Path, marker) -> tuple[list, bool]:
    """The files the run in ``out`` wrote, and whether its marker listed them.

    A marker without a list (written by an older mixlab), a damaged or missing one: the names a
    run of its recorded seeds and arms writes (config.json's, else the marker's configuration).
    """
    if isinstance(marker, dict) and isinstance(marker.get(RunFiles.KEY), list):
        return [f for f in marker[RunFiles.KEY] if isinstance(f, str)], True
    saved, _ = _read_json(out / "config.json")
    saved = saved if isinstance(saved, dict) else {}
    conf = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    if not conf and isinstance(marker, dict) and isinstance(marker.get("config"), dict):
        conf = marker["config"]
    seeds = conf.get("seeds") if isinstance(conf.get("seeds"), list) else []
    names = saved.get("arms") if isinstance(saved.get("arms"), list) else []
    names = [n for n in names if isinstance(n, str)]
    epochs = conf.get("epochs")
    if isinstance(epochs, list) and epochs and all(isinstance(e, int) and not isinstance(e, bool) for e in epochs):
        names = B.file_stems(names, epochs, conf.get("budget_mode", "full"))
    return sorted(_run_paths([s for s in seeds if isinstance(s, int)], names)), False


def _check_layout(out: Path, cfg: LabConfig, arms: list, *, resume: bool, overwrite: bool,
                  kind: str | None = None) -> dict:
    """Refuse (``RunError``, reads only) a folder this run cannot write into as it is, before any work.

    ``checkpoints/``, ``predictions/`` and ``plots/`` must be real folders (or absent): not files,
    not symbolic links (the run writes only inside ``--out``). A file the run writes must not be a
    folder. With ``--overwrite`` (and on ``--resume`` when the marker lists the run's files), a file
    the run will write that is not one the previous run wrote (and that ``--overwrite`` removes) is
    the user's: refused, never replaced. Returns the plan: ``{"previous": [...], "listed": bool}``.
    """
    if not out.is_dir():
        return {"previous": [], "listed": False}
    nothing = "nothing was changed"
    for name, what in _FOLDERS.items():
        path = out / name
        if path.is_symlink():
            raise RunError(f"{path} is a symbolic link; the run writes its {what} only inside --out {out}, never "
                           f"through a link: replace it with a folder (or remove it); {nothing}")
        if path.exists() and not path.is_dir():
            raise RunError(f"{path} is a file, not a folder; the run writes its {what} there: move it away; {nothing}")
    writes = _writes(cfg, arms, kind)
    for rel in sorted(writes):
        path = out / rel
        if path.is_dir() and not path.is_symlink():
            raise RunError(f"{path} is a folder, but the run writes a file there: move it away; {nothing}")
    marker, _ = _read_json(out / MARKER)
    previous, listed = _previous_files(out, marker)
    owned = None
    if overwrite:
        owned = set(remove_listed(out, previous, dry_run=True)[0])
    elif resume and listed:
        owned = set(previous)
    if owned is not None:
        for rel in sorted(writes - owned):
            if os.path.lexists(out / rel):
                whose = "the previous run" if overwrite else "this run"
                source = f"{out / MARKER}" if listed else f"{out / MARKER} or config.json"
                raise RunError(f"{out / rel} was not written by {whose} (it is not one of the files {source} "
                               f"lists), but the run writes it: move it away, or choose another --out; {nothing}")
    return {"previous": previous, "listed": listed}


def _check_saved_config(out: Path, cfg: LabConfig, arms: list) -> None:
    """A resume without a usable marker: config.json is then the only record of the run's configuration,
    so check it against the hash every checkpoint records (reads only; ``RunError`` names both)."""
    want = config_sha256(cfg.to_dict())
    for rel in sorted(p for p in _run_paths(cfg.seeds, _stems(cfg, arms)) if p.endswith(".pt")):
        path = out / rel
        if not path.is_file():
            continue
        try:
            got = load_checkpoint(path).get("config_sha256")
        except CheckpointError:
            continue  # damaged: training falls back, rebuilds it or names it
        if isinstance(got, str) and got != want:
            raise RunError(f"{out / 'config.json'} does not hold the configuration the run's checkpoints were written "
                           f"with ({rel}: config hash {got[:12]}, config.json {want[:12]}), and {out / MARKER}, which "
                           f"records it, is missing or damaged: undo the edit to config.json, or start a new run "
                           f"(another --out, or --overwrite); nothing was changed")


def _tmp_targets(out: Path, rels) -> list:
    """``(folder, name pattern)`` pairs for :func:`remove_stale_tmp`: exactly the files a run lists."""
    groups: dict = {}
    for rel in set(rels) | set(_RUN_FILES) | {MARKER}:
        folder, _, name = rel.rpartition("/")
        groups.setdefault(folder, set()).add(name)
    return [(out / folder if folder else Path(os.path.realpath(out)),
             re.compile("|".join(re.escape(n) for n in sorted(names)))) for folder, names in groups.items()]


def _marker_header(command: str, cfg: LabConfig) -> dict:
    import mixlab

    return {"mixlab_run": 1, "command": command, "config_sha256": config_sha256(cfg.to_dict()),
            "config": cfg.to_dict(), "mixlab": getattr(mixlab, "__version__", None),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _agree(step: Callable[[], object], main_process: bool):
    """Run ``step`` on the main process; under torchrun every rank raises if it failed (no rank hangs)."""
    result, error = None, None
    if main_process:
        try:
            result = step()
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    message = broadcast_object(None if error is None else str(error))
    if error is not None:
        raise error
    if message is not None:
        raise RunError(message)
    return result


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _write_metrics(out: Path, histories: dict) -> None:
    lines = [json.dumps({k: v for k, v in rec.items() if k != "ece_bins"})
             for hist in histories.values() for rec in hist]
    atomic_write_text(out / "metrics.jsonl", "".join(line + "\n" for line in lines))


def _initial_weights(cfg: LabConfig, seed: int, input_shape, num_classes, path: Path,
                     main_process: bool = True, expect: dict | None = None) -> dict:
    """The seed's initial weights: made once (global generator seeded by ``seed``), saved, reused by every arm.

    Every rank of a torchrun job makes the same weights from the seed; only the main process saves them.
    A damaged (or missing) saved copy, or one of another seed or model, is rebuilt from the seed: the
    weights are a function of it.
    """
    identity = {"seed": seed, "model": cfg.model}
    if path.exists():
        try:
            ck = load_checkpoint(path, required=("model",))
            check_identity(ck, path, identity)
        except CheckpointError as e:
            if main_process:
                _stderr(f"mixlab: {path} {e.problem}; rebuilding the initial weights from seed {seed} "
                        f"(they depend on the seed alone; the arms' checkpoints check their hash)")
        else:
            check_checkpoint_matches(ck, path, {k: v for k, v in (expect or {}).items()
                                                if k in ("config_sha256", "data_sha256")})
            return ck["model"]
    torch.manual_seed(seed)
    state = build_model(cfg.model, input_shape, num_classes).state_dict()
    if main_process:
        save_checkpoint(path, {"model": state, "seed": seed, "model_name": cfg.model, **(expect or {})},
                        identity=identity)
    return state


def _mean_std(values: list) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def summarize(histories: dict, arms: list, seeds: list, predictions: dict | None = None) -> dict:
    """Final figures per arm and seed, mean/std across seeds, and every arm against the baseline.

    ``predictions`` (``{(seed, arm): predict(...)}``) adds the per-image paired tests; see
    :mod:`mixlab_lab.stats`.
    """
    from . import stats

    names = [a[0] for a in arms]
    per_seed = {arm: {} for arm in names}
    for (seed, arm), hist in histories.items():
        last = hist[-1]
        rec = {k: last[k] for k in METRICS if k in last}
        # best over the epochs scored on the whole test set (--eval-subset scores the others on a subset)
        rec.update(epochs=last["epoch"], best_test_acc=max(r["test_acc"] for r in hist if "test_rows" not in r),
                   train_time_s=sum(r["train_time_s"] for r in hist), ece_bins=last["ece_bins"])
        per_seed[arm][str(seed)] = rec
    keys = [k for k in METRICS + ("best_test_acc", "train_time_s")
            if any(k in r for a in per_seed.values() for r in a.values())]
    agg = {arm: {k: _mean_std([r.get(k) for r in per_seed[arm].values()]) for k in keys} for arm in per_seed}
    summary = {"arms": names, "seeds": list(seeds), "per_seed": per_seed, "aggregate": agg}
    if len(arms) >= 2 and arms[0][1] == "none":
        preds = predictions or {}
        base = names[0]
        summary["versus_baseline"] = {
            arm: stats.compare_arms(per_seed[base], per_seed[arm],
                                    {str(s): p for (s, a), p in preds.items() if a == base},
                                    {str(s): p for (s, a), p in preds.items() if a == arm})
            for arm in names[1:]}
    if len(arms) == 2:
        base, mixed = names[0], names[1]
        summary["difference"] = {
            "what": f"{mixed} minus {base}, per seed, then mean/std across seeds",
            **{k: _mean_std([per_seed[mixed][s][k] - per_seed[base][s][k] for s in per_seed[base]
                             if s in per_seed[mixed] and per_seed[base][s].get(k) is not None
                             and per_seed[mixed][s].get(k) is not None]) for k in keys},
        }
    return summary


def _check_mixing(cfg: LabConfig, arms: list, data) -> None:
    """Build each arm's mixing as training does (the data's input shape and class counts) and mix two
    rows: a method that cannot mix these inputs (PuzzleMix's blocks, GridMix's holes on small images,
    SaliencyMix on tabular rows, Remix without a class count) fails now, before any arm trains, not
    after the baseline. ``data``: a :class:`mixlab_lab.data.DataSplits` or :class:`mixlab_lab.train.LabData`."""
    from .train import build_mixer

    shape = tuple(data.x_train.shape[1:])
    counts = torch.bincount(torch.as_tensor(data.y_train).long().cpu(), minlength=int(data.num_classes))
    probe = torch.zeros((2,) + shape)
    for _, mix, alpha in arms:
        if mix != "none":
            try:
                # SnapMix reads the trained model's class activation maps: check this model has them, now
                takes_model = "classifier" in inspect.signature(mixlab.methods.get(mix).cls).parameters
                model = build_model(cfg.model, shape, int(data.num_classes)) if takes_model else None
                build_mixer(cfg, mix, int(data.num_classes), torch.Generator(), alpha=alpha, input_shape=shape,
                            class_counts=counts, model=model)(probe, torch.zeros(2, dtype=torch.long))
            except (TypeError, ValueError) as e:
                raise ValueError(f"--mix {mix} cannot mix this dataset's inputs {shape}: {e}") from None


def _split_options(cfg: LabConfig) -> str:
    """The options that shape the training split, as typed (``--train-size 2 --classes 3,7``), for messages."""
    given = [("train-size", cfg.train_size), ("classes", cfg.classes), ("imbalance", cfg.imbalance),
             ("label-noise", cfg.label_noise or None)]
    text = [f"--{k} {','.join(map(str, v)) if isinstance(v, list) else f'{v:g}'}" for k, v in given if v is not None]
    return " ".join(text) or f"--dataset {cfg.dataset}"


def _check_data(cfg: LabConfig, arms: list, splits, seed: int, *, inputs: bool = True) -> None:
    """What the run needs of one seed's data (a :class:`mixlab_lab.data.DataSplits`), checked before any arm
    trains; a ``ValueError`` names the option at fault.

    - the test split holds rows (they score every arm);
    - an epoch takes an optimiser step: two training rows per process (a lone row is dropped);
    - every class has a training row (a class never seen cannot be learned, and Remix divides by the
      class counts);
    - with ``inputs`` (the input shape and the classes do not change with the seed): the model takes
      these inputs (:func:`mixlab_lab.models.check_input`) and each arm's mixing mixes them
      (:func:`_check_mixing`).
    """
    import math

    from mixlab.distributed import get_info

    from .models import check_input
    from .train import _no_step_message

    where = _split_options(cfg)
    if int(splits.y_test.numel()) == 0:
        raise ValueError(f"{where}: seed {seed}'s test split holds no rows, so no arm could be scored")
    n, world = int(splits.y_train.numel()), get_info().world_size
    n_local = math.ceil(n / world)
    if not any(b.numel() > 1 for b in torch.arange(n_local).split(cfg.batch_size)):
        raise ValueError(_no_step_message(cfg, n, n_local, world))
    counts = torch.bincount(torch.as_tensor(splits.y_train).long().cpu(), minlength=int(splits.num_classes))
    missing = [str(splits.classes[c]) for c in range(len(counts)) if counts[c] == 0]
    if missing:
        fix = ("use a larger --train-size" if cfg.train_size is not None
               else "use a smaller --imbalance" if cfg.imbalance is not None else "keep fewer --classes")
        raise ValueError(f"{where}: seed {seed}'s training split has no example of {len(missing)} of the "
                         f"{len(counts)} classes ({', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''}); "
                         f"every class needs a training row (a class never seen cannot be learned, and Remix "
                         f"divides by the class counts): {fix}")
    if inputs:
        check_input(cfg.model or default_model(splits.kind), splits.input_shape, int(splits.num_classes),
                    data=f"--dataset {cfg.dataset}")
        _check_mixing(cfg, arms, splits)


def _load_checked(cfg: LabConfig, arms: list):
    """The first seed's data, once every seed's has passed :func:`_check_data`: the other seeds' data
    is loaded, checked and dropped (a seeded subset may lack a class), so a run that cannot finish
    fails before its first step, not after the first seed's arms trained. The first load's warnings
    are shown once the checks pass (a refused run prints its one line alone)."""
    import warnings

    first, shown = None, []
    for seed in cfg.seeds:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            splits = load_splits(cfg, seed)
        _check_data(cfg, arms, splits, seed, inputs=first is None)
        if first is None:
            first, shown = splits, caught
    for w in shown:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return first


def run_lab(cfg: LabConfig, arms: list[tuple[str, str]], *, resume: bool = False, overwrite: bool = False,
            command: str | None = None, main_process: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train every (seed, arm), write the run folder, and return the summary dict.

    ``resume=True`` skips finished arms and continues unfinished ones from their last
    complete epoch; the figures equal those of an uninterrupted run. A fresh run takes only a
    new or empty folder, or (``overwrite=True``) one holding a mixlab run, whose own files it
    then removes: nothing is removed or written before the options are checked and the first
    seed's data is loaded. One process owns the folder at a time (a lock file). ``command``
    (``"compare"`` or ``"train"``) defaults to what ``arms`` imply. See docs/RELIABILITY.md.

    Raises:
        RunError: the folder is not this run's to take, is in use, or a checkpoint cannot be
            used (the message names the file and what to do).
    """
    out = Path(cfg.out)
    command = command or ("compare" if len(arms) >= 2 else "train")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    lock = RunLock(out / LOCK)

    def check() -> None:  # reads only
        _check_folder(out, command, cfg, arms, resume=resume, overwrite=overwrite)
        _check_layout(out, cfg, arms, resume=resume, overwrite=overwrite)
        lock.refuse_if_held()

    # 1. Read-only checks: refuse early, before any data is loaded.
    _agree(check, main_process)
    # 2. The inputs: the first seed's data (a wrong --data-dir fails here, before anything is touched).
    first = _load_checked(cfg, arms)  # every seed's data, the model and each arm's mixing checked: before any work
    if cfg.model is None:
        cfg.model = default_model(first.kind)
    info = provenance()

    def take_folder() -> RunFiles:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire(log=_stderr)
        try:  # check again, now that no other mixlab process can change the folder; reads only up to the clear
            state = _check_folder(out, command, cfg, arms, resume=resume, overwrite=overwrite)
            plan = _check_layout(out, cfg, arms, resume=resume, overwrite=overwrite, kind=first.kind)
            if resume and not state["marker_ok"]:
                _check_saved_config(out, cfg, arms)
            if state["clear"]:  # exactly the listed files, never through a link; not the marker (rewritten next)
                gone, left = remove_listed(out, plan["previous"])
                log(f"--overwrite: removed the previous run's {len(gone)} file(s) from {out}")
                if left:
                    _stderr(f"mixlab: --overwrite left {len(left)} listed path(s) alone: "
                            + "; ".join(f"{rel} {why}" for rel, why in left[:5]) + ("; ..." if len(left) > 5 else ""))
            expected = _run_paths(cfg.seeds, _stems(cfg, arms))
            stale = remove_stale_tmp(*_tmp_targets(out, set(plan["previous"]) | expected))
            if stale:
                _stderr(f"mixlab: removed {len(stale)} unfinished temporary file(s) left by a killed run in {out}")
            if not resume:
                # config.json first, then the marker listing it: a kill in between leaves a folder --resume
                # can continue (a missing marker is rebuilt from config.json).
                atomic_write_json(out / "config.json", {"config": cfg.to_dict(), "arms": [a[0] for a in arms],
                                                         "data": _data_info(first), **info})
                files = RunFiles(out, MARKER, _marker_header(command, cfg), ["config.json"])
                files.save()
                return files
            # A resume keeps the run's config.json (the record of what was run; threads/device changes go to
            # the checkpoints' notes) and writes the marker only when its list grows or the run ends, so a
            # refused resume leaves the folder as it was.
            if state["marker_ok"]:
                marker, _ = _read_json(out / MARKER)
                owned = plan["previous"] if plan["listed"] else [r for r in plan["previous"]
                                                                 if os.path.lexists(out / r)]
                return RunFiles(out, MARKER, marker, owned, pending=not plan["listed"])
            note = f"mixlab: {out / MARKER} was missing or damaged; rewrote it from config.json"
            return RunFiles(out, MARKER, _marker_header(command, cfg),
                            [r for r in plan["previous"] if os.path.lexists(out / r)], pending=True,
                            on_save=lambda: _stderr(note))
        except BaseException:
            lock.release()
            raise

    # 3. Own the folder (rank 0); every rank learns whether that worked.
    files = _agree(take_folder, main_process)
    try:
        with recording(files):  # every file written under --out is listed in the marker first
            summary = _train_all(cfg, arms, out, first, main_process, log)
        if files is not None:
            files.flush()
        return summary
    finally:
        if main_process:
            lock.release()


def _train_all(cfg: LabConfig, arms: list, out: Path, first, main_process: bool, log) -> dict:
    """Train every (seed, arm) (a budget sweep: every (seed, arm, budget)), then summarise and report.

    Histories, predictions and hashes are keyed by ``(seed, arm)`` for one budget, by ``(seed, arm, budget)``
    in a sweep (file stems ``<arm>_e<B>``); the sweep's summary is the longest budget's, as a one-budget run's,
    plus ``budgets`` (each budget's figures and verdicts) and ``budget_verdict`` (a crossover line per arm).
    """
    histories: dict = {}
    predictions: dict = {}
    hashes: dict = {"pred": {}, "init": {}, "final": {}}
    notes: list = []
    t_start = time.perf_counter()
    cfg_hash = config_sha256(cfg.to_dict())
    sweep = len(cfg.budgets) > 1
    data = None
    for i, seed in enumerate(cfg.seeds):
        splits = first if i == 0 else load_splits(cfg, seed)
        data = prepare_data(splits, cfg, cfg.device)
        fingerprint = data_fingerprint(data)
        expect = {"config_sha256": cfg_hash, "data_sha256": fingerprint}
        init = _initial_weights(cfg, seed, data.input_shape, data.num_classes,
                                out / "checkpoints" / f"seed{seed}_init.pt", main_process, expect)
        for arm, mix, alpha in arms:
            for budget in B.training_order(cfg):
                key = (seed, arm, budget) if sweep else (seed, arm)
                _train_one(cfg, data, init, out, key, mix, alpha, budget, fingerprint, notes, histories,
                           predictions, hashes, main_process, log)
    if sweep:
        per_budget = {b: summarize({k[:2]: h for k, h in histories.items() if k[2] == b}, arms, cfg.seeds,
                                   {k[:2]: p for k, p in predictions.items() if k[2] == b}) for b in cfg.budgets}
        last = {k[:2]: h for k, h in histories.items() if k[2] == cfg.budgets[-1]}
        summary = dict(per_budget[cfg.budgets[-1]])
        summary["budgets"] = {str(b): {k: v for k, v in s.items() if k != "arms" and k != "seeds"}
                              for b, s in per_budget.items()}
        summary["budget_mode"] = cfg.budget_mode
    else:
        last = histories
        summary = summarize(histories, arms, cfg.seeds, predictions)
    times = [r["epoch_time_s"] for h in histories.values() for r in h if "epoch_time_s" in r]
    summary["epoch_time_s"] = statistics.fmean(times) if times else None
    if main_process and len(arms) >= 2:
        from . import stats

        summary["warnings"] = stats.run_warnings(summary, last, num_classes=data.num_classes,
                                                 num_test=int(data.y_test.numel()), label_noise=cfg.label_noise)
        losses = None
        if sweep:
            summary["budget_verdict"] = B.budget_lines(summary["budgets"], summary["arms"])
            more = B.still_improving(summary["budgets"], summary["arms"])
            if more:
                summary["warnings"].append(more)
            losses = {a[0]: [summary["budgets"][str(b)]["aggregate"][a[0]]["train_loss"]["mean"]
                             for b in cfg.budgets] for a in arms}
        summary["mixed_loss_far"] = B.loss_far_from_converged(last, summary["arms"], {a[0]: a[1] for a in arms},
                                                              losses)
        summary["next_steps"] = stats.next_steps(summary, summary["warnings"], cfg)
        summary["verdict"] = [stats.headline(arm, comp) for arm, comp in summary["versus_baseline"].items()]
    summary["predictions_sha256"] = hashes["pred"]
    summary["arm_alpha"] = {a[0]: None if a[1] in ALPHA_FREE + ("none",) else a[2] for a in arms}
    summary["methods"] = {a[0]: a[1] for a in arms}
    summary["init_sha256"] = hashes["init"]
    summary["weights_sha256"] = hashes["final"]
    summary["resume_notes"] = notes
    summary["wall_time_s_this_invocation"] = time.perf_counter() - t_start
    if main_process:
        _write_metrics(out, _tagged(histories, sweep))
        atomic_write_json(out / "summary.json", summary)
        from .report import write_report  # lazy: matplotlib

        write_report(out, cfg, summary, last, data)
    return summary


def _tagged(histories: dict, sweep: bool) -> dict:
    """The histories as metrics.jsonl shows them: in a sweep each record also names its ``budget``."""
    if not sweep:
        return histories
    return {k: [{**r, "budget": k[2]} for r in h] for k, h in histories.items()}


def _train_one(cfg, data, init, out, key, mix, alpha, budget, fingerprint, notes, histories, predictions, hashes,
               main_process, log) -> None:
    """Train (or resume, or reload when finished) one (seed, arm[, budget]) run from the seed's initial weights."""
    seed, arm = key[:2]
    sweep = len(key) == 3
    stem = B.stem(arm, budget, sweep)
    ckpt = out / "checkpoints" / f"seed{seed}_{stem}.pt"
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(init)

    def on_epoch(hist):
        histories[key] = hist
        _write_metrics(out, _tagged(histories, sweep))
        last = hist[-1]
        log(f"seed {seed} {arm:>16} epoch {last['epoch']:>3}/{budget}: test acc {last['test_acc']:.4f}  "
            f"nll {last['test_nll']:.4f}  ece {last['test_ece']:.4f}  train loss {last['train_loss']:.4f}  "
            f"({last['epoch_time_s']:.1f}s" + (f", {last['train_images_per_s']:.0f} train / "
                                               f"{last['eval_images_per_s']:.0f} eval img/s)"
                                               if last.get("train_images_per_s") and last.get("eval_images_per_s")
                                               else ")"))

    owner = {"seed": seed, "arm": arm, "method": mix, "alpha": None if mix in ALPHA_FREE + ("none",) else float(alpha)}
    if sweep:
        owner["epochs"] = budget
    plan = B.lr_plan(cfg, budget) if sweep else None
    branches = None
    if plan is not None and budget == cfg.budgets[-1]:  # the shared constant-lr run: copies at the decay starts
        branches = {B.branch_epoch(b): out / "checkpoints" / f"seed{seed}_{B.branch_stem(arm, b)}.pt"
                    for b in cfg.budgets[:-1] if B.branch_epoch(b) > 0}
    elif plan is not None:  # rank 0 copies; under torchrun every rank waits for it before reading the checkpoint
        _agree(lambda: _start_from_branch(cfg, out, seed, arm, budget, ckpt, {**owner, "epochs": cfg.budgets[-1]},
                                          owner), main_process)
    with checkpoint_identity(owner):  # its checkpoints record it; another arm's count as damaged
        hist, init_hash = train_arm(cfg, data, model, seed=seed, arm=arm, mix=mix, ckpt_path=ckpt,
                                    main_process=main_process, on_epoch=on_epoch, fingerprint=fingerprint,
                                    notes=notes, alpha=alpha, epochs=budget, lr_plan=plan, branch_points=branches)
    histories[key] = hist
    if main_process:  # from the final weights: also after a resume of a finished arm
        predictions[key] = predict(model, cfg, data)
        hashes["pred"].setdefault(stem, {})[str(seed)] = save_predictions(
            out / "predictions" / f"seed{seed}_{stem}.npz", predictions[key])
    hashes["init"].setdefault(stem, {})[str(seed)] = init_hash
    hashes["final"].setdefault(stem, {})[str(seed)] = weights_sha256(model)


def _start_from_branch(cfg, out: Path, seed: int, arm: str, budget: int, ckpt: Path, trunk: dict, owner: dict) -> None:
    """``--budget-mode checkpoints``: a shorter budget's run starts as the shared run's copy at its decay start.

    Done once, when the budget's own checkpoints do not exist yet; the copy is saved as the budget's first
    checkpoint (its owner: this budget), and training continues from it with the budget's decay. Without a
    usable copy the budget trains from the initial weights with the same schedule: the same run, at full cost.
    """
    from .store import previous_path

    if ckpt.exists() or previous_path(ckpt).exists() or B.branch_epoch(budget) == 0:
        return
    src = out / "checkpoints" / f"seed{seed}_{B.branch_stem(arm, budget)}.pt"
    try:
        ck = load_checkpoint(src)
        check_identity(ck, src, trunk)
    except CheckpointError as e:
        _stderr(f"mixlab: {src} {e.problem}; training seed {seed} {arm} at {budget} epochs from the initial "
                f"weights instead (the same run, at full cost)")
        return
    if ck.get("epoch") != B.branch_epoch(budget):
        return
    save_checkpoint(ckpt, {**ck, "done": False}, identity=owner)
