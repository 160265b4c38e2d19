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
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import AUGMENTS, LOSSES, MIXES, NORMALIZES, OPTIMIZERS, PRESETS, SCHEDULES, LabConfig, resolve_config

__all__ = ["main", "build_parser"]

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


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S, help="dataset name (see `mixlab datasets`); default fashion-mnist")
    g.add_argument("--data-dir", default=S, help="where to read the dataset (default: its standard place)")
    g.add_argument("--classes", type=_int_list, default=S, help="keep these classes, relabelled 0..n-1 (e.g. 3,7)")
    g.add_argument("--label-noise", type=float, default=S, help="fraction of training labels to corrupt (seeded)")
    g.add_argument("--train-size", type=int, default=S, help="seeded random subset of the training set")
    g.add_argument("--cache-dir", default=S, help="cache for decoded images (default $MIXLAB_CACHE or ~/.cache/mixlab)")
    g.add_argument("--label-regex", default=S, help="folder dataset: labels from file names, e.g. '(.+)_\\d+.jpg$'")
    g.add_argument("--label-column", default=S, help="csv dataset: the label column's name")
    g.add_argument("--test-fraction", type=float, default=S, help="test share for sets without an official split")
    g.add_argument("--normalize", choices=NORMALIZES, default=S, help="dataset mean/std, or pixels/255 only")


def _add_mix_options(p: argparse.ArgumentParser, mixes=MIXES) -> None:
    g = p.add_argument_group("mixing (lam = weight of the original row, lam ~ Beta(alpha, alpha))")
    g.add_argument("--mix", choices=mixes, default=S, help="mixing method (default mixup)")
    g.add_argument("--alpha", type=float, default=S, help="Beta(alpha, alpha) concentration (default 0.2)")
    g.add_argument("--cutmix-alpha", type=float, default=S, help="CutMix branch of mixup-or-cutmix (default 1.0)")
    g.add_argument("--switch-prob", type=float, default=S, help="mixup-or-cutmix: probability of CutMix")
    g.add_argument("--mode", choices=("batch", "sample", "pair"), default=S,
                   help="one lam per batch (the paper) or per sample (fastai, Keras article)")
    g.add_argument("--keep-dominant", action=argparse.BooleanOptionalAction, default=S,
                   help="fastai's lam = max(lam, 1 - lam)")
    g.add_argument("--p", type=float, default=S, help="probability that a row (batch) is mixed at all")


def _add_train_options(p: argparse.ArgumentParser, mixes) -> None:
    _add_data_options(p)
    _add_mix_options(p, mixes)
    g = p.add_argument_group("training")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a named protocol (see docs/RESULTS.md)")
    g.add_argument("--config", default=None, help="JSON file of options (merged under explicit flags)")
    g.add_argument("--model", default=S, help="model name (default: fast-cnn for images, mlp for tabular)")
    g.add_argument("--epochs", type=int, default=S)
    g.add_argument("--batch-size", type=int, default=S)
    g.add_argument("--eval-batch-size", type=int, default=S)
    g.add_argument("--lr", type=float, default=S)
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=S)
    g.add_argument("--weight-decay", type=float, default=S)
    g.add_argument("--momentum", type=float, default=S, help="SGD momentum (Nesterov)")
    g.add_argument("--schedule", choices=SCHEDULES, default=S, help="learning-rate schedule, stepped per batch")
    g.add_argument("--loss", choices=LOSSES, default=S, help="ce, or bce = sigmoid outputs + BCE (article 000)")
    g.add_argument("--augment", choices=AUGMENTS, default=S, help="auto = crop+flip for CIFAR-like images only")
    g.add_argument("--seeds", type=_int_list, default=S, help="comma-separated seeds, e.g. 0,1,2")
    g.add_argument("--out", default=S, help="run folder (default runs/latest)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out (skips finished arms)")
    g.add_argument("--device", default=S, help="cpu, cuda, cuda:1, mps ...")
    g.add_argument("--threads", type=int, default=S, help="torch CPU threads (0 = torch's default)")
    g.add_argument("--quiet", action="store_true", default=S, help="no progress bars or per-epoch lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixlab", description="mixlab's lab: does mixup help, on real data?",
                                     epilog="Convention: lam weights the ORIGINAL row; see README.md.")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="train without and with mixing from the same weights")
    _add_train_options(cmp, tuple(m for m in MIXES if m != "none"))
    tr = sub.add_parser("train", help="train one arm (--mix none for plain ERM)")
    _add_train_options(tr, MIXES)
    pv = sub.add_parser("preview", help="PNG grid of mixed samples with their soft labels as bars")
    _add_data_options(pv)
    _add_mix_options(pv, tuple(m for m in MIXES if m != "none"))
    pv.add_argument("--out", default="mixed_samples.png", help="PNG path (default mixed_samples.png)")
    pv.add_argument("--n", type=int, default=9, help="number of samples (default 9)")
    pv.add_argument("--seed", type=int, default=0)
    ds = sub.add_parser("datasets", help="list the datasets, where each is looked for, and whether it is present")
    ds.add_argument("--data-dir", default=None)
    ds.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench = sub.add_parser("bench", help="speed benchmarks (mixlab.bench); options after `bench` go to it")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    for sp in (cmp, tr, pv, ds, bench):
        sp.set_defaults(_parser=sp)  # errors print the subcommand's usage
    return parser


def _explicit(ns: argparse.Namespace) -> dict:
    skip = {"command", "preset", "config", "resume", "rest", "n", "seed", "json", "_parser"}
    return {k: v for k, v in vars(ns).items() if k not in skip}


def _resumed_config(parser, ns, explicit: dict) -> LabConfig:
    """The saved configuration of the run in ``--out``; only ``--quiet/--device/--threads`` may change."""
    if ns.preset or ns.config:
        parser.error("--resume continues the saved run: do not pass --preset or --config with it")
    out = Path(explicit.get("out", LabConfig.out))
    saved = out / "config.json"
    if not saved.is_file():
        parser.error(f"--resume: no run to resume in --out {str(out)!r} ({saved} is missing)")
    cfg_dict = json.loads(saved.read_text())["config"]
    changed = sorted(k for k, v in explicit.items() if k not in _RESUME_FREE and v != cfg_dict.get(k))
    if changed:
        parser.error("--resume continues the saved run, but these options differ from " f"{saved}: "
                     + ", ".join(f"--{k.replace('_', '-')} (saved {cfg_dict.get(k)!r}, given {explicit[k]!r})"
                                 for k in changed))
    cfg_dict.update({k: v for k, v in explicit.items() if k in _RESUME_FREE})
    cfg_dict["out"] = str(out)
    return LabConfig(**cfg_dict).validate()


def _check_dataset(name: str) -> None:
    from mixlab.data.datasets import DATASETS

    if name not in DATASETS:
        raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {name!r}")


def _run(parser, ns) -> int:
    from .runner import arms_for, run_lab

    explicit = _explicit(ns)
    try:
        cfg = (_resumed_config(parser, ns, explicit) if ns.resume
               else resolve_config(explicit, preset=ns.preset, config_file=ns.config))
        arms = arms_for(ns.command, cfg)
        from .models import MODELS

        if cfg.model is not None and cfg.model not in MODELS:
            raise ValueError(f"--model must be one of {sorted(MODELS)}, got {cfg.model!r}")
        _check_dataset(cfg.dataset)
    except ValueError as e:
        parser.error(str(e))
    from . import distributed

    info = distributed.init_from_env(timeout_s=_dist_timeout())  # single-process info without torchrun
    if info.device.type == "cuda":
        cfg.device = str(info.device)  # one GPU per rank (nccl)
    log = (lambda s: None) if cfg.quiet or not info.is_main else (lambda s: print(s, flush=True))
    try:
        summary = run_lab(cfg, arms, resume=ns.resume, main_process=info.is_main, log=log)
    except KeyboardInterrupt:
        print(f"\ninterrupted; every finished epoch is checkpointed. Continue with:\n"
              f"  mixlab {ns.command} --out {cfg.out} --resume", file=sys.stderr)
        return 130
    except FileNotFoundError as e:
        print(f"mixlab: {e}", file=sys.stderr)
        return 1
    distributed.shutdown()
    if not info.is_main:
        return 0
    from .report import format_table

    print(format_table(summary))
    print(f"report: {Path(cfg.out) / 'report.md'}")
    return 0


def _dist_timeout() -> float:
    """Seconds a rank waits for the others under torchrun (``MIXLAB_DIST_TIMEOUT``, default 600)."""
    text = os.environ.get("MIXLAB_DIST_TIMEOUT", "600")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"MIXLAB_DIST_TIMEOUT must be a number of seconds, got {text!r}") from None


def _preview(parser, ns) -> int:
    from .report import mixed_samples_png
    from .runner import load_splits
    from .train import prepare_data

    try:
        cfg = resolve_config({k: v for k, v in _explicit(ns).items() if k != "out"})
        _check_dataset(cfg.dataset)
        if ns.n < 1:
            raise ValueError(f"--n must be >= 1, got {ns.n}")
    except ValueError as e:
        parser.error(str(e))
    try:
        splits = load_splits(cfg, ns.seed)
    except FileNotFoundError as e:
        print(f"mixlab: {e}", file=sys.stderr)
        return 1
    if splits.kind != "image":
        parser.error(f"--dataset must be an image dataset for preview, got {cfg.dataset!r} ({splits.kind})")
    mixed_samples_png(prepare_data(splits, cfg, "cpu"), cfg, Path(ns.out), n=ns.n, seed=ns.seed)
    print(f"wrote {ns.out}")
    return 0


def _datasets(ns) -> int:
    from mixlab.data import list_datasets

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
        from mixlab import bench
    except ImportError as e:
        print(f"mixlab bench: the benchmark module mixlab.bench is not available ({e}); "
              "install mixlab with the bench extra: pip install -e '.[bench]'", file=sys.stderr)
        return 1
    result = bench.main(rest)
    return result if isinstance(result, int) else 0


def main(argv=None) -> int:
    """Entry point of the ``mixlab`` console script and ``python -m mixlab``; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["bench"]:  # argparse's REMAINDER drops leading options: hand every token to mixlab.bench
        return _bench(args[1:])
    ns = build_parser().parse_args(argv)
    parser = ns._parser
    if ns.command in ("compare", "train"):
        return _run(parser, ns)
    if ns.command == "preview":
        return _preview(parser, ns)
    if ns.command == "datasets":
        return _datasets(ns)
    return _bench(ns.rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
