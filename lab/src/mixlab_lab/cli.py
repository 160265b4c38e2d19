"""``mixlab``: the lab's command line (``compare``, ``train``, ``preview``, ``datasets``, ``bench``).

``mixlab compare`` trains, for each seed, one initial model twice from the same weights and
the same data order: plain (ERM) and with mixing; it prints a comparison table and writes a
run folder with a report. Convention: ``lam`` weights the ORIGINAL row,
``mixed = lam * x + (1 - lam) * x[index]``, with ``lam ~ Beta(alpha, alpha)``.

Examples::

    mixlab compare --dataset fashion-mnist --preset demo --out runs/demo
    mixlab compare --preset keras --seeds 0,1,2 --out runs/keras
    mixlab compare --dataset digits --epochs 5 --label-noise 0.4 --out runs/noisy
    mixlab compare --out runs/demo --resume          # after Ctrl-C
    mixlab preview --dataset fashion-mnist --alpha 0.2 --out mixed.png

A user error (an option, the data, a config file, the run folder, a diverged run, a package the
subcommand needs that is missing) prints one line, ``mixlab: <message>``, on stderr and exits
with status 2; ``--debug`` adds the traceback. Anything else is a bug in mixlab and shows its
traceback.

The lab's own dependencies (numpy, torchvision, matplotlib, tqdm, scikit-learn, pillow, scipy) come with
its distribution (``pip install ./lab``, mixlab-lab). ``main`` imports every package the
subcommand needs (``NEEDS``) before any work, so a missing one is named at once rather than
after training.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import traceback
from pathlib import Path

from .config import (AUGMENTS, AUTOCASTS, BUDGET_MODES, COMPILES, EMA_MODES, LOSSES, MAX_SEED, MIXES, NORMALIZES,
                     OMITTED_DEFAULTS, OPTIMIZERS, PRESET_ALIASES, PRESETS, SCHEDULES, LabConfig, LabError,
                     load_config_file, resolve_config)

__all__ = ["main", "build_parser", "check_packages", "UsageError", "MissingPackages", "NEEDS"]


class UsageError(LabError):
    """A command line argparse refused (unknown option, bad type, missing value)."""


# What ``main`` reports as one line with status 2: options, data (mixlab.data raises ValueError /
# TypeError with complete messages), files and folders, and mixlab's own errors. Anything else is a bug.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
               LabError)


class MissingPackages(LabError):
    """The subcommand needs packages that are not installed, or installed but failing to import."""


# The optional packages the lab imports (import name -> pip name): the `lab` extra of pyproject.toml, and
# scipy, which scikit-learn requires. Where: torchvision (lab/models.py: the resnet models), matplotlib
# (lab/report.py: the plots; preview's PNG), tqdm (lab/train.py: progress bars), scikit-learn
# (data/_tabular.py: digits, wine, breast-cancer, iris), pillow (data/_images.py: image folders and
# tarballs; matplotlib's PNGs), scipy (lab/stats.py: t-intervals and McNemar; PuzzleMix's graph cut).
LAB_PACKAGES = {"numpy": "numpy", "torchvision": "torchvision", "matplotlib": "matplotlib", "tqdm": "tqdm",
                "sklearn": "scikit-learn", "PIL": "pillow", "scipy": "scipy"}
LAB_EXTRA = ("numpy", "torchvision", "matplotlib", "tqdm", "scikit-learn", "pillow")  # pip names of mixlab-lab's dependencies (lab/pyproject.toml)
# What each subcommand may import, by import name: whatever its options, so no run dies on an import later.
NEEDS = {
    "compare": tuple(LAB_PACKAGES),
    "train": tuple(LAB_PACKAGES),
    "preview": ("matplotlib", "PIL", "sklearn", "scipy"),  # data, the PNG, PuzzleMix: no model, no bars
    "datasets": (),  # says itself whether scikit-learn's sets are present
    "bench": (),  # a missing peer library is a skipped row
}


def check_packages(command: str) -> None:
    """Import every package ``command`` needs (``NEEDS``); raise :class:`MissingPackages` naming all
    that are missing or fail to import, with the command that installs them."""
    missing, broken = [], []
    for module in NEEDS.get(command, ()):
        pip = LAB_PACKAGES.get(module, module)
        try:
            importlib.import_module(module)
        except ImportError as e:
            if e.name is None or e.name.partition(".")[0] == module:
                missing.append(pip)
            else:  # installed, but a module it imports is not
                broken.append((pip, e))
        except Exception as e:  # e.g. a torchvision built for another torch: RuntimeError
            broken.append((pip, e))
    # a package that fails only because another one of the list is missing is fixed by installing that one
    broken = [(pip, e) for pip, e in broken if not (isinstance(e, ImportError) and e.name is not None and
                                                    LAB_PACKAGES.get(e.name.partition(".")[0]) in missing)]
    if not missing and not broken:
        return
    what, fixes = [], []
    if missing:
        what.append(f"{', '.join(missing)} (not installed)")
        fixes.append(f"install {'them' if len(missing) > 1 else 'it'} with: pip install {' '.join(missing)}")
    for pip, e in broken:
        what.append(f"{pip} (installed, but importing it fails: {type(e).__name__}: {_one_line(e)})")
    if broken:
        names = [p for p, _ in broken]
        fixes.append(f"reinstall {'them' if len(names) > 1 else 'it'} with: "
                     f"pip install --force-reinstall {' '.join(names)}")
    raise MissingPackages(f"the lab (mixlab {command}) needs {' and '.join(what)}; {'; '.join(fixes)}")


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``main`` prints them) instead of usage + exit."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")

S = argparse.SUPPRESS
_RESUME_FREE = {"quiet", "device", "threads", "out"}  # may change when resuming; nothing else may


def _int_list(text: str) -> list:
    try:
        vals = [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return vals


def _preset(text: str) -> str:
    """A listed preset name, or a former one (:data:`mixlab_lab.config.PRESET_ALIASES`, accepted but not listed)."""
    if text in PRESETS or text in PRESET_ALIASES:
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(sorted(PRESETS))})")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S, help="dataset name (see `mixlab datasets`); default fashion-mnist")
    g.add_argument("--data-dir", default=S, help="where to read the dataset (default: its standard place)")
    g.add_argument("--classes", type=_int_list, default=S, help="keep these classes, relabelled 0..n-1 (e.g. 3,7)")
    g.add_argument("--label-noise", type=float, default=S, help="fraction of training labels to corrupt (seeded)")
    g.add_argument("--train-size", type=int, default=S, help="seeded random subset of the training set")
    g.add_argument("--test-size", type=int, default=S,
                   help="score on a fixed random subset of this many test images (the same for every seed)")
    g.add_argument("--imbalance", type=float, default=S,
                   help="long-tailed training set: largest / smallest class count (e.g. 100), exponential profile")
    g.add_argument("--cache-dir", default=S, help="cache for decoded images (default $MIXLAB_CACHE or ~/.cache/mixlab)")
    g.add_argument("--label-regex", default=S, help="folder dataset: labels from file names, e.g. '(.+)_\\d+.jpg$'")
    g.add_argument("--label-column", default=S, help="csv dataset: the label column's name")
    g.add_argument("--test-fraction", type=float, default=S, help="test share for sets without an official split")
    g.add_argument("--normalize", choices=NORMALIZES, default=S, help="dataset mean/std, or pixels/255 only")


def _names(choices, several: bool):
    def parse(text: str):
        vals = [v.strip() for v in text.split(",") if v.strip()]
        if not vals:
            raise argparse.ArgumentTypeError(f"expected a method name, got {text!r}")
        if len(vals) > 1 and not several:
            raise argparse.ArgumentTypeError(f"takes one method here, got {text!r} (`mixlab compare` takes a list)")
        bad = [v for v in vals if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"expected {'names' if several else 'one'} of {', '.join(choices)}; "
                                             f"got {bad[0]!r}")
        return vals if len(vals) > 1 else vals[0]
    return parse


def _floats(several: bool):
    def parse(text: str):
        try:
            vals = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'comma-separated numbers such as 0.2,1' if several else 'a number'}"
                                             f", got {text!r}") from None
        if not vals or (len(vals) > 1 and not several):
            raise argparse.ArgumentTypeError(f"expected {'numbers' if several else 'one number'}, got {text!r}")
        return vals if len(vals) > 1 else vals[0]
    return parse


def _epochs(several: bool):
    """``--epochs``: one budget, or (``compare``) increasing budgets ``10,30,90``; a refusal names what came."""
    expected = ("an epoch count >= 1, or increasing epoch counts such as 10,30,90" if several
                else "one epoch count >= 1 such as 10 (a list such as 10,30,90 is for `mixlab compare`)")

    def parse(text: str):
        try:
            vals = [int(v) for v in text.split(",")]
        except ValueError:
            vals = []
        if not vals or any(v < 1 for v in vals) or any(a >= b for a, b in zip(vals, vals[1:])) or (
                len(vals) > 1 and not several):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return vals if len(vals) > 1 else vals[0]
    return parse


def _add_mix_options(p: argparse.ArgumentParser, mixes=MIXES, several: bool = False) -> None:
    g = p.add_argument_group("mixing (lam = weight of the original row, lam ~ Beta(alpha, alpha))")
    g.add_argument("--mix", type=_names(mixes, several), default=S, metavar="NAME" + ("[,NAME...]" if several else ""),
                   help=f"mixing method{'s, each compared with the baseline' if several else ''} (default mixup): "
                        f"{', '.join(mixes)}")
    g.add_argument("--alpha", type=_floats(several), default=S, metavar="A" + ("[,A...]" if several else ""),
                   help="Beta(alpha, alpha) concentration (default 0.2)"
                        + ("; several values train every method at each" if several else ""))
    g.add_argument("--cutmix-alpha", type=float, default=S, help="CutMix branch of mixup-or-cutmix (default 1.0)")
    g.add_argument("--switch-prob", type=float, default=S, help="mixup-or-cutmix: probability of CutMix")
    g.add_argument("--mix-stop-epoch", type=int, default=S,
                   help="no mixing from this epoch on (counting from 0; timm's --mixup-off-epoch)")
    g.add_argument("--mode", choices=("batch", "sample", "pair"), default=S,
                   help="one lam per batch (the paper) or per sample (fastai, Keras article)")
    g.add_argument("--keep-dominant", action=argparse.BooleanOptionalAction, default=S,
                   help="fastai's lam = max(lam, 1 - lam)")
    g.add_argument("--p", type=float, default=S, help="probability that a row (batch) is mixed at all")


def _add_train_options(p: argparse.ArgumentParser, mixes, several: bool = False) -> None:
    _add_data_options(p)
    _add_mix_options(p, mixes, several)
    g = p.add_argument_group("training")
    g.add_argument("--preset", type=_preset, metavar="{" + ",".join(sorted(PRESETS)) + "}", default=None,
                   help="a named protocol (see docs/RESULTS.md)")
    g.add_argument("--config", default=None, help="JSON file of options (merged over --preset or the preset it "
                                                  "names, under explicit flags)")
    g.add_argument("--model", default=S, help="model name (default: fast-cnn for images, mlp for tabular)")
    g.add_argument("--epochs", type=_epochs(several), default=S, metavar="E" + ("[,E...]" if several else ""),
                   help="training budget in epochs (default 3)" + ("; several increasing values (10,30,90) train "
                        "every arm at each, each with its own full schedule, and say where the verdict turns"
                        if several else ""))
    if several:
        g.add_argument("--budget-mode", choices=BUDGET_MODES, default=S,
                       help="with several --epochs: full (default) = one run per arm and budget from the initial "
                            "weights; checkpoints = an approximation: one constant-lr run per arm, a copy of it "
                            "decayed over the last 20%% of each budget")
    g.add_argument("--batch-size", type=int, default=S)
    g.add_argument("--eval-batch-size", type=int, default=S)
    g.add_argument("--lr", type=float, default=S)
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=S)
    g.add_argument("--weight-decay", type=float, default=S)
    g.add_argument("--momentum", type=float, default=S, help="SGD momentum (Nesterov)")
    g.add_argument("--schedule", choices=SCHEDULES, default=S, help="learning-rate schedule, stepped per batch")
    g.add_argument("--loss", choices=LOSSES, default=S,
                   help="ce, or bce = sigmoid outputs + BCE (the cifar10-bce preset)")
    g.add_argument("--label-smoothing", type=float, default=S,
                   help="cross-entropy label smoothing in every arm (default 0)")
    g.add_argument("--augment", choices=AUGMENTS, default=S,
                   help="auto = crop+flip for CIFAR-like images only; translate-flip = airbench's (random shift by up "
                        "to 2 px with reflect padding, alternating flips)")
    g.add_argument("--seeds", type=_int_list, default=S, help="comma-separated seeds, e.g. 0,1,2")
    g.add_argument("--out", default=S, help="run folder (default runs/latest)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out (skips finished arms)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the mixlab run in --out (removes only that run's own files)")
    g.add_argument("--device", default=S, help="cpu, cuda, cuda:1, mps ...")
    g.add_argument("--threads", type=int, default=S, help="torch CPU threads (0 = torch's default)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=S,
                   help="image batches and conv weights channels-last (default off)")
    g.add_argument("--compile", choices=COMPILES, default=S,
                   help="torch.compile the eval forward, the training forward or both (default off; falls back "
                        "to eager with a note where compilation fails)")
    g.add_argument("--autocast", choices=AUTOCASTS, default=S,
                   help="bf16: forwards under torch.autocast(bfloat16), losses and metrics in float32 (default off)")
    g.add_argument("--eval-subset", type=int, default=S, metavar="N",
                   help="score epochs before the last on a fixed random subset of N test images; the last epoch "
                        "and the verdict use the whole test set (default: every epoch on the whole test set)")
    g.add_argument("--quiet", action="store_true", default=S, help="no progress bars or per-epoch lines")
    g = p.add_argument_group("airbench's pieces (issue 21; all off by default)")
    g.add_argument("--ema", type=float, default=S, metavar="DECAY",
                   help="moving average of the weights, updated after the optimiser steps; evaluations and the final "
                        "weights are the average's (airbench94: 0.95 with --ema-mode lookahead)")
    g.add_argument("--ema-mode", choices=EMA_MODES, default=S,
                   help="average (default): a shadow copy updated every step; lookahead: airbench's, every 5 steps "
                        "the average moves toward the weights (decay DECAY**5 * (t/T)**3) and the weights are reset "
                        "to it")
    g.add_argument("--bn-lr-scale", type=float, default=S, metavar="S",
                   help="normalisation layers' parameters train at S x --lr with --weight-decay / S (airbench's "
                        "bias_scaler groups; default 1; airbench-cpu already has it inside)")
    g.add_argument("--decay-bias-bn", action=argparse.BooleanOptionalAction, default=S,
                   help="weight decay on biases and normalisation parameters (default on; --no-decay-bias-bn: none)")
    g.add_argument("--init-batch", type=int, default=S, metavar="N",
                   help="before training, the model's data-based initialisation (airbench-cpu: its whitening) on N "
                        "un-augmented, unmixed training images chosen by the seed (default: airbench-cpu whitens "
                        "from its first training batch)")
    g.add_argument("--eval-every", type=int, default=S, metavar="K",
                   help="evaluate every K epochs and the last (default 1); other epochs record no test metrics")
    _add_debug_option(p)


def _add_debug_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=S,
                   help="on an error, print the traceback as well as the one-line message")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mixlab", description="mixlab's lab: does mixup help, on real data?",
                     epilog="Convention: lam weights the ORIGINAL row; see README.md.")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="on an error, print the traceback as well as the one-line message")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="train without and with mixing from the same weights")
    _add_train_options(cmp, MIXES, several=True)
    tr = sub.add_parser("train", help="train one arm (--mix none for plain ERM)")
    _add_train_options(tr, MIXES)
    pv = sub.add_parser("preview", help="PNG grid of mixed samples with their soft labels as bars",
                        description="A grid of mixed training images, each labelled with its lam and its partner, "
                                    "and its soft label as bars. Defaults show visible mixing: --alpha 1 (lam "
                                    "uniform) and --mode sample (one lam per image).")
    _add_data_options(pv)
    _add_mix_options(pv, tuple(m for m in MIXES if m != "none"))
    pv.add_argument("--out", default="mixed_samples.png", help="PNG path (default mixed_samples.png)")
    pv.add_argument("--n", type=int, default=9, help=f"number of samples, 1 to {PREVIEW_MAX_N} and at most the "
                                                      f"training rows (default 9)")
    pv.add_argument("--seed", type=int, default=0)
    _add_debug_option(pv)
    ds = sub.add_parser("datasets", help="list the datasets, where each is looked for, and whether it is present")
    ds.add_argument("--data-dir", default=None)
    ds.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_debug_option(ds)
    bench = sub.add_parser("bench", help="speed benchmarks (mixlab_lab.bench); options after `bench` go to it")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    for sp in (cmp, tr, pv, ds, bench):
        sp.set_defaults(_parser=sp)  # errors print the subcommand's usage
    return parser


def _explicit(ns: argparse.Namespace) -> dict:
    skip = {"command", "preset", "config", "resume", "rest", "n", "seed", "json", "_parser", "debug", "overwrite"}
    return {k: v for k, v in vars(ns).items() if k not in skip}


def _resumed_config(ns, explicit: dict) -> LabConfig:
    """The saved configuration of the run in ``--out``; only ``--quiet/--device/--threads`` may change."""
    if ns.preset or ns.config:
        raise ValueError("--resume continues the saved run: do not pass --preset or --config with it")
    out = Path(explicit.get("out", LabConfig.out))
    saved = out / "config.json"
    if not saved.is_file():
        raise ValueError(f"--resume: no run to resume in --out {str(out)!r} ({saved} is missing)")
    what = f"--resume: the run's {str(saved)!r}"
    cfg_dict = load_config_file(saved, what=what)  # names the file if it is truncated, edited or from another version
    for k, default in OMITTED_DEFAULTS.items():  # left out of config.json at their defaults (LabConfig.to_dict)
        cfg_dict.setdefault(k, default)
    changed = sorted(k for k, v in explicit.items() if k not in _RESUME_FREE and v != cfg_dict.get(k))
    if changed:
        raise ValueError("--resume continues the saved run, but these options differ from " f"{saved}: "
                         + ", ".join(f"--{k.replace('_', '-')} (saved {cfg_dict.get(k)!r}, given {explicit[k]!r})"
                                     for k in changed))
    cfg_dict.update({k: v for k, v in explicit.items() if k in _RESUME_FREE})
    cfg_dict["out"] = str(out)
    try:
        return LabConfig(**cfg_dict).validate()
    except ValueError as e:
        raise ValueError(f"{what} does not hold a valid configuration: {e}") from None


def _check_dataset(name: str) -> None:
    from mixlab_lab.data.datasets import DATASETS

    if name not in DATASETS:
        raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {name!r}")


def _check_device(name: str) -> None:
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"--device must be a torch device such as cpu, cuda, cuda:1 or mps, got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: no usable CUDA device (torch.cuda.is_available() is False)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name!r}: MPS is not available on this machine")


def _check_run(cfg: LabConfig, arms: list) -> None:
    """Everything that can be checked before loading data or training: an error here costs no work."""
    import torch

    from .models import MODELS
    from .train import build_mixer

    if cfg.model is not None and cfg.model not in MODELS:
        raise ValueError(f"--model must be one of {sorted(MODELS)}, got {cfg.model!r}")
    _check_dataset(cfg.dataset)
    _check_device(cfg.device)
    _dist_timeout()
    if cfg.init_batch is not None:  # a model without a data-based initialisation: refused before any work
        _check_init_batch(cfg)
    for _, mix, alpha in arms:  # the core's own checks of the mixing options, now rather than after the baseline arm
        try:
            build_mixer(cfg, mix, 2, torch.Generator(), alpha=alpha)
        except (ValueError, TypeError) as e:
            raise ValueError(f"--mix {mix}: the mixing options are refused: {e}") from None


def _check_init_batch(cfg: LabConfig) -> None:
    """``--init-batch`` needs a model with a data-based initialisation (a method ``init_from_data``)."""
    import torch

    from .models import build_model

    name = cfg.model
    has = False
    if name is not None:
        try:
            with torch.random.fork_rng(devices=[]):
                has = callable(getattr(build_model(name, (3, 32, 32), 10), "init_from_data", None))
        except (ValueError, RuntimeError, TypeError):
            has = True  # cannot tell from a stand-in input: the arm's setup checks it on the real one
    if not has:
        raise ValueError(f"--init-batch: model {name or 'the default model'} has no data-based initialisation (a "
                         f"method init_from_data(x)); the airbench-cpu models have one. Leave --init-batch out or "
                         f"choose --model airbench-cpu")


def _run(ns) -> int:
    from .runner import arms_for, run_lab

    explicit = _explicit(ns)
    cfg = (_resumed_config(ns, explicit) if ns.resume
           else resolve_config(explicit, preset=ns.preset, config_file=ns.config))
    arms = arms_for(ns.command, cfg)
    _check_run(cfg, arms)
    from . import distributed

    info = distributed.init_from_env(timeout_s=_dist_timeout())  # single-process info without torchrun
    if info.device.type == "cuda":
        cfg.device = str(info.device)  # one GPU per rank (nccl)
    log = (lambda s: None) if cfg.quiet or not info.is_main else (lambda s: print(s, flush=True))
    heartbeat = _Heartbeat.start(info)  # under a process group: lets a rank name a peer that froze
    try:
        summary = run_lab(cfg, arms, resume=ns.resume, overwrite=ns.overwrite, command=ns.command,
                          main_process=info.is_main, log=log)
        if heartbeat is not None:
            heartbeat.stop(join_s=2 * heartbeat.INTERVAL)  # no store traffic while the group is torn down
        distributed.shutdown()  # its barrier waits for every peer too
    except KeyboardInterrupt:
        print(f"\ninterrupted; every finished epoch is checkpointed. Continue with:\n"
              f"  mixlab {ns.command} --out {cfg.out} --resume", file=sys.stderr)
        return 130
    except Exception as e:
        if heartbeat is not None and _peer_failure(e):
            heartbeat.exit_peer_lost(e, ns.command, cfg.out, getattr(ns, "debug", False))  # one line, status 1
        raise
    finally:
        if heartbeat is not None:
            heartbeat.stop()
    if not info.is_main:
        return 0
    from .report import format_table, verdict_text

    print(format_table(summary))
    text = verdict_text(summary)
    if text:
        print()
        print(text)
    print(f"report: {Path(cfg.out) / 'report.md'}")
    for line in summary.get("verdict", []):
        print(f"verdict: {line}")
    if summary.get("budget_mode") == "checkpoints" and summary.get("budget_verdict"):
        print("budgets (an approximation, --budget-mode checkpoints: one constant-lr run per arm, decayed at each "
              "budget; see report.md):")
    for line in summary.get("budget_verdict", []):
        print(f"budgets: {line}")
    return 0


def _peer_failure(e: BaseException) -> bool:
    """True for the errors a collective raises when a peer rank froze, died or dropped its connection."""
    import torch.distributed as tdist

    if isinstance(e, getattr(tdist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        s in text for s in ("timed out", "timeout", "connection reset", "connection closed", "pair closure",
                            "broken pipe", "socket closed", "gloo", "nccl"))


class _Heartbeat:
    """Each rank writes the time into the process group's store every ``INTERVAL`` seconds (a thread).

    When a collective fails, the rank reads its peers' times: a peer whose time is stale froze
    (``SIGSTOP``, a debugger, a hung driver) or died; a store that does not answer means rank 0,
    which hosts it without torchrun, is the one that stopped. The rank then prints one line and
    leaves with status 1 through ``os._exit``: tearing a gloo group down while a peer is stuck in
    a collective can abort the process (status -6) instead.
    """

    INTERVAL = 1.0
    KEY = "mixlab/heartbeat/{}"

    def __init__(self, store, info):
        self.store, self.info = store, info
        self.stopped = threading.Event()
        self.beat()
        self.thread = threading.Thread(target=self.run, name="mixlab-heartbeat", daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, info):
        if not info.distributed:
            return None
        try:
            from torch.distributed import distributed_c10d

            return cls(distributed_c10d._get_default_store(), info)
        except Exception:  # a torch without the store API: no names, the generic message still comes
            return None

    def beat(self) -> None:
        import time

        self.store.set(self.KEY.format(self.info.rank), repr(time.time()))

    def run(self) -> None:
        while not self.stopped.wait(self.INTERVAL):
            try:
                self.beat()
            except Exception:  # the store went away (rank 0 stopped): the collective's error will tell
                return

    def stop(self, join_s: float = 0.0) -> None:
        self.stopped.set()
        if join_s > 0 and self.thread is not threading.current_thread():
            self.thread.join(join_s)

    def silent_peers(self, wait_s: float = 5.0) -> tuple[list, bool]:
        """``([(rank, seconds since its last beat), ...], store_answered)`` for the peers that went quiet.

        The store is read in a daemon thread given ``wait_s`` seconds: a frozen store host keeps the
        connection open and a read can block for ever (the caller leaves with ``os._exit`` anyway).
        """
        import datetime
        import time

        self.stop()
        stale_after = max(3 * self.INTERVAL, 0.5 * _dist_timeout())
        found: dict = {}

        def read():
            self.store.set_timeout(datetime.timedelta(seconds=max(1.0, wait_s - 1)))
            now = time.time()
            found["quiet"] = [(r, age) for r in range(self.info.world_size) if r != self.info.rank
                              for age in [now - float(self.store.get(self.KEY.format(r)).decode())]
                              if age > stale_after]

        reader = threading.Thread(target=lambda: _ignore_errors(read), name="mixlab-heartbeat-read", daemon=True)
        reader.start()
        reader.join(wait_s)
        return found.get("quiet", []), "quiet" in found

    def exit_peer_lost(self, e: BaseException, command: str, out: str, debug: bool) -> None:
        import re

        me = self.info.rank
        quiet, answered = self.silent_peers()
        if quiet:
            who = ", ".join(f"rank {r} (silent for {age:.0f} s)" for r, age in quiet)
            what = f"{who} stopped answering: frozen or dead"
        elif not answered and me != 0:
            what = "rank 0 stopped answering (the store it hosts does not respond): frozen or dead"
        else:
            what = "a peer rank stopped answering or closed its connection"
        detail = re.sub(r"\[[^\]]*\]\s*", "", _one_line(e))  # gloo's "[/path/file.cc:78] " prefixes
        if debug:
            traceback.print_exc()
        print(f"mixlab: rank {me}: {what}; waited up to MIXLAB_DIST_TIMEOUT={_dist_timeout():g} s ({detail}); "
              f"finished epochs are checkpointed: continue with `mixlab {command} --out {out} --resume`",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)


def _ignore_errors(fn) -> None:
    try:
        fn()
    except Exception:
        pass


def _dist_timeout() -> float:
    """Seconds a rank waits for the others under torchrun (``MIXLAB_DIST_TIMEOUT``, default 600)."""
    text = os.environ.get("MIXLAB_DIST_TIMEOUT", "600")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"MIXLAB_DIST_TIMEOUT must be a positive number of seconds, got {text!r}")
    return value


PREVIEW_MAX_N = 64  # panels in one preview PNG (a figure of n panels takes time and memory in proportion)


def _check_png_path(out: str) -> None:
    """``preview --out``: a file path in an existing folder (checked before any work)."""
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {out!r} is a folder; give the PNG file's path, e.g. "
                         f"{str(path / 'mixed_samples.png')!r}")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"--out {out!r}: the folder {str(folder)!r} "
                         f"{'is a file' if folder.exists() else 'does not exist'}; create it or choose another path")


def _preview(ns) -> int:
    from . import runner
    from .report import mixed_samples_png
    from .train import prepare_data

    given = {k: v for k, v in _explicit(ns).items() if k != "out"}
    given.setdefault("alpha", 1.0)    # lam ~ U(0, 1): the mixing is visible (alpha 0.2 gives lam near 0 or 1)
    given.setdefault("mode", "sample")  # one lam (box, mask) per panel
    cfg = resolve_config(given)
    _check_dataset(cfg.dataset)
    if not 1 <= ns.n <= PREVIEW_MAX_N:
        raise ValueError(f"--n must be an int from 1 to {PREVIEW_MAX_N} (panels in one PNG), got {ns.n}")
    if cfg.train_size is not None and ns.n > cfg.train_size:
        raise ValueError(f"--n {ns.n} is more than the {cfg.train_size} training rows --train-size {cfg.train_size} "
                         f"keeps; give --n {cfg.train_size} or less")
    if not 0 <= ns.seed <= MAX_SEED:
        raise ValueError(f"--seed must be an int in [0, {MAX_SEED}], got {ns.seed}")
    _check_png_path(ns.out)
    arms = [(cfg.mix, cfg.mix, cfg.alpha)]
    _check_run(cfg, arms)
    splits = runner.load_splits(cfg, ns.seed)
    if splits.kind != "image":
        raise ValueError(f"--dataset must be an image dataset for preview, got {cfg.dataset!r} ({splits.kind})")
    rows = int(splits.y_train.numel())
    if ns.n > rows or rows < 2:
        raise ValueError(f"--n {ns.n}: {cfg.dataset!r} has {rows} training row(s) with these options; give --n "
                         f"{rows} or less" if rows >= 2 else f"--n {ns.n}: preview needs 2 training rows to mix, "
                         f"{cfg.dataset!r} has {rows} with these options")
    runner._check_mixing(cfg, arms, splits)
    mixed_samples_png(prepare_data(splits, cfg, "cpu"), cfg, Path(ns.out), n=ns.n, seed=ns.seed)
    print(f"wrote {ns.out}")
    return 0


def _datasets(ns) -> int:
    from mixlab_lab.data import list_datasets

    rows = list_datasets(ns.data_dir)
    if ns.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'name'.ljust(w)}  {'kind':8} present  location")
    for r in rows:
        print(f"{r['name'].ljust(w)}  {r['kind']:8} {'yes' if r['present'] else 'no ':7}  {r['location']}")
        if not r["present"]:
            print(f"{''.ljust(w)}  {'':8} {'':7}  to get it: {r['how_to_get']}")
    return 0


def _bench(rest: list) -> int:
    try:
        bench = importlib.import_module("mixlab_lab.bench")  # through sys.modules, so a missing module is seen
    except ImportError as e:
        print(f"mixlab bench: the benchmark module mixlab_lab.bench is not available ({e}); "
              "install the lab with its bench extra: pip install -e './lab[bench]'", file=sys.stderr)
        return 1
    result = bench.main(rest)
    return result if isinstance(result, int) else 0


def main(argv=None) -> int:
    """Entry point of the ``mixlab`` console script and ``python -m mixlab_lab``; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["bench"]:  # argparse's REMAINDER drops leading options: hand every token to mixlab_lab.bench
        return _bench(args[1:])
    debug = "--debug" in (args[:args.index("--")] if "--" in args else args)
    try:
        ns = build_parser().parse_args(args)
        check_packages(ns.command)  # before any work: a missing package is named now, not after training
        if ns.command in ("compare", "train"):
            return _run(ns)
        if ns.command == "preview":
            return _preview(ns)
        if ns.command == "datasets":
            return _datasets(ns)
        return _bench(ns.rest)
    except USER_ERRORS as e:
        if isinstance(e, TypeError) and not isinstance(e, LabError) and not _raised_by_mixlab(e):
            raise  # a TypeError Python or a library raised (a wrong call, a bad operand) is a bug: show it
        if debug:
            traceback.print_exc()
        print(f"mixlab: {_one_line(e)}", file=sys.stderr, flush=True)
        return 2


def _raised_by_mixlab(e: BaseException) -> bool:
    """True if a ``raise`` statement in mixlab's own code (the library or the lab) raised ``e`` (a message
    written for the user)."""
    import linecache

    import mixlab
    import mixlab_lab

    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    ours = (Path(mixlab.__file__).resolve().parent, Path(mixlab_lab.__file__).resolve().parent)
    if not any(root in path.parents for root in ours):
        return False
    return linecache.getline(str(path), tb.tb_lineno).lstrip().startswith("raise")


def _one_line(e: BaseException) -> str:
    """The error's message on one line; an OSError as ``<file>: <reason>`` (no ``[Errno N]``)."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
