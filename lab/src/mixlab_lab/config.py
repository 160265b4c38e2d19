"""The lab's configuration: one dataclass holding every option, presets, and merging.

Precedence, lowest first: the dataclass defaults, ``--preset``, ``--config FILE`` (JSON), then
the flags given on the command line. The resolved configuration is written to the run
folder's ``config.json``.

Convention: ``alpha`` parameterises Beta(alpha, alpha) for ``lam``, the weight of the
ORIGINAL row (``mixed = lam * x + (1 - lam) * x[index]``), as everywhere in mixlab.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from pathlib import Path
from typing import Optional

from mixlab import registry as _registry

__all__ = ["LabConfig", "LabError", "PRESETS", "PRESET_ALIASES", "MIXES", "ALPHA_FREE", "MAX_SEED", "resolve_config",
           "load_config_file"]

MAX_SEED = 2**32 - 1  # numpy's bound; mixlab.data and the per-rank streams derive larger seeds from it


class LabError(Exception):
    """An error the user can fix (options, data, run folder, a diverged run): the ``mixlab``
    command prints its message on one line, ``mixlab: <message>``, and exits with status 2.

    Raise it (or a subclass) with a complete message naming the option or file at fault.
    """

# The lab's methods: every registered classification method (mixlab.methods.available()), read from the registry.
MIXES = ("none",) + tuple(_registry.available(task="classification"))
# Methods that draw no lam from Beta(alpha, alpha) (ResizeMix: box scale ~ U(0.1, 0.8); SmoothMix: blob
# width ~ U(0.25, 0.5)): one arm each whatever --alpha lists.
ALPHA_FREE = tuple(m for m in MIXES[1:] if not _registry.get(m).alpha)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
LOSSES = ("ce", "bce")
# "translate-flip": airbench's (github.com/KellerJordan/cifar10-airbench): a random translation by up to 2 pixels with
# reflect padding, and alternating flips (each image flipped at random once per run, then every image flipped
# together every other epoch)
AUGMENTS = ("auto", "none", "crop-flip", "flip", "translate-flip")
NORMALIZES = ("dataset", "unit")
# --budget-mode: "full" trains every (arm, budget) from the initial weights with its own full schedule;
# "checkpoints" (an approximation) trains one constant-lr run per arm and decays a copy of it at each budget
BUDGET_MODES = ("full", "checkpoints")
# Speed options (issue 21 section 2): --compile torch.compile's the model's eval forward, its training forward or
# both (falling back to eager with a note where compilation fails); --autocast bf16 runs the forwards under
# torch.autocast(bfloat16)
COMPILES = ("off", "eval", "train", "all")
AUTOCASTS = ("off", "bf16")
# --ema-mode (issue 21 section 3): "average", a shadow copy of the weights that evaluation uses, or "lookahead",
# airbench's: every 5 steps the average moves toward the weights and the weights are reset to it
EMA_MODES = ("average", "lookahead")
# Options left out of to_dict (config.json, the config hash) while at these defaults, so configurations made
# before they existed hash, and resume, as before
OMITTED_DEFAULTS = {"budget_mode": "full", "channels_last": False, "compile": "off", "autocast": "off",
                    "eval_subset": None, "ema": None, "ema_mode": "average", "bn_lr_scale": 1.0,
                    "decay_bias_bn": True, "init_batch": None, "eval_every": 1}


def _options(info) -> tuple:
    import inspect

    return tuple(inspect.signature(info.cls).parameters)


@dataclasses.dataclass
class LabConfig:
    """Every option of ``mixlab compare`` / ``mixlab train`` (the CLI flag is the field name with dashes).

    Attributes:
        dataset, data_dir, classes, label_noise, train_size, cache_dir, label_regex, label_column,
            test_fraction:
            passed to :func:`mixlab_lab.data.load_dataset`; ``classes`` keeps a subset (relabelled
            0..n-1), ``label_noise`` corrupts that fraction of training labels (fixed by the seed).
        model: a name from :data:`mixlab_lab.models.MODELS`; ``None`` picks the dataset's default.
        test_size: score on a fixed random subset of this many test images (the same for every seed).
        imbalance: a long-tailed training set, ratio of the largest to the smallest class (e.g. 100).
        mix: a name of :data:`MIXES` (``"none"`` trains the plain baseline); for ``compare`` a list
            of names (or a comma-separated string), each trained against the baseline.
        alpha: Beta(alpha, alpha) for ``lam`` (the original row's weight); for ``compare`` a list
            of values, every method trained at each (methods in :data:`ALPHA_FREE` once); ``cutmix_alpha`` the
            CutMix branch of ``mixup-or-cutmix``; ``mode`` batch|sample|pair; ``keep_dominant``
            fastai's ``max(lam, 1 - lam)``; ``p`` the probability a row (batch) is mixed.
        loss: ``"ce"`` (cross-entropy, mixed through ``MixedTarget.loss``) or ``"bce"`` (sigmoid
            outputs + binary cross-entropy on soft one-hot labels, as the ``cifar10-bce`` preset);
            ``label_smoothing`` smooths the cross-entropy's targets in every arm (the mixers apply it
            to the mixed target).
        augment: ``"auto"`` (crop+flip for 3-channel images >= 32 px, nothing otherwise),
            ``"none"``, ``"crop-flip"``, ``"flip"``, ``"translate-flip"`` (airbench's: a random translation by up
            to 2 pixels with reflect padding, and alternating flips: each image flipped at random once per run, by
            the seed, then all flipped together every other epoch). ``normalize``: ``"dataset"`` mean/std or
            ``"unit"`` (pixels / 255 only, as the Keras article).
        threads: ``torch.set_num_threads`` (0 keeps torch's default).
        epochs: the training budget; for ``compare`` a list of increasing budgets (``[10, 30, 90]`` or
            ``"10,30,90"``): every arm is trained at each, each with its own full schedule
            (:mod:`mixlab_lab.budget`). One value stays an int (the config hash of one-budget runs is unchanged).
        budget_mode: with several budgets, ``"full"`` (one run per arm and budget) or ``"checkpoints"`` (one
            constant-lr run per arm, a copy decayed at each budget: an approximation, labelled as such). Left out
            of :meth:`to_dict` at its default, so one-budget configurations hash as before.
        channels_last: image batches and conv weights in the channels-last memory format (values may differ from
            the contiguous layout in the last bits; off by default: not measured faster for ``fast-cnn`` at 2 threads
            here, and ``airbench-cpu``/``resnet9-narrow`` are channels-last inside already).
        compile: ``"off"``, ``"eval"`` (``torch.compile`` of the eval-mode forward: test metrics and
            predictions), ``"train"`` (the training forward) or ``"all"``; where compilation fails (no C++
            compiler for inductor, an unsupported op) the eager forward runs and a note says so.
        autocast: ``"off"`` or ``"bf16"`` (forwards under ``torch.autocast(bfloat16)``, losses and metrics in
            float32).
        eval_subset: score epochs before the last on a fixed random subset of this many test images (the same
            for every epoch and seed); the last epoch, the summary and the predictions use the whole test set.
        ema: ``None`` (off) or a decay in [0, 1): an exponential moving average of the weights, updated after the
            optimiser steps; every evaluation (each epoch's and the final one) and the weights the arm ends with (its
            predictions, its ``weights_sha256``) are the average's. Trainable parameters and floating-point buffers
            (BatchNorm running statistics) are averaged; frozen parameters and integer buffers are copied. The
            average is saved in the arm's checkpoints and restored on resume.
        ema_mode: ``"average"`` (a shadow copy updated after every step with the decay ``min(ema, (1 + t) / (10 +
            t))`` at step ``t``, TensorFlow's warm-up; training itself is untouched) or ``"lookahead"`` (airbench's:
            every 5 steps the average moves toward the weights with the decay ``ema ** 5 * (t / T) ** 3``, ``T`` the
            run's steps, and the weights are reset to it; airbench94 uses 0.95).
        bn_lr_scale: the learning rate of normalisation layers' parameters (BatchNorm, LayerNorm, GroupNorm) is
            this many times ``lr``, and their weight decay is divided by it so their decay per step ``lr * wd`` is
            the other weights' (airbench's ``bias_scaler`` parameter groups). ``airbench-cpu*`` already trains its
            BatchNorm biases at 64x inside the model: leave it at 1 there.
        decay_bias_bn: ``False`` (``--no-decay-bias-bn``): no weight decay on biases and normalisation parameters
            (a common recipe; airbench itself decays them).
        init_batch: ``None`` or N: before training, a model with a data-dependent initialisation (a method
            ``init_from_data(x)``; ``airbench-cpu*``: its whitening filters) runs it on N training images chosen by
            the seed, un-augmented and unmixed, so every arm of a seed starts from the same filters (airbench whitens
            from 5,000 images). Without it ``airbench-cpu*`` whitens from its first training batch.
        eval_every: evaluate every this many epochs (and always the last, on the whole test set); an epoch without
            evaluation records no test metrics and ``test_rows`` 0.
        (These ten are left out of :meth:`to_dict` at their defaults, see :data:`OMITTED_DEFAULTS`.)
    """

    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None
    classes: Optional[list] = None
    label_noise: float = 0.0
    imbalance: Optional[float] = None
    test_size: Optional[int] = None
    train_size: Optional[int] = None
    cache_dir: Optional[str] = None
    label_regex: Optional[str] = None
    label_column: Optional[str] = None
    test_fraction: float = 0.2
    model: Optional[str] = None
    epochs: object = 3      # an int, or for compare a list of increasing ints (or "10,30,90")
    batch_size: int = 128
    eval_batch_size: int = 1000
    lr: float = 3e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "onecycle"
    loss: str = "ce"
    label_smoothing: float = 0.0
    augment: str = "auto"
    normalize: str = "dataset"
    mix: object = "mixup"   # a name, or for compare a list of names (or "a,b,c")
    alpha: object = 0.2     # a number, or for compare a list of numbers (or "0.2,1")
    cutmix_alpha: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    keep_dominant: bool = False
    p: float = 1.0
    mix_stop_epoch: Optional[int] = None
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    out: str = "runs/latest"
    device: str = "cpu"
    threads: int = 0
    quiet: bool = False
    preset: Optional[str] = None
    budget_mode: str = "full"
    channels_last: bool = False
    compile: str = "off"
    autocast: str = "off"
    eval_subset: Optional[int] = None
    ema: Optional[float] = None
    ema_mode: str = "average"
    bn_lr_scale: float = 1.0
    decay_bias_bn: bool = True
    init_batch: Optional[int] = None
    eval_every: int = 1

    def validate(self) -> "LabConfig":
        """Check every field; raise ``ValueError`` naming the option, what was expected and what came."""
        def need(ok, option, expected, got):
            if not ok:
                raise ValueError(f"--{option.replace('_', '-')} must be {expected}, got {got!r}")

        for f in dataclasses.fields(self):
            check_type(f.name, getattr(self, f.name))
        self.mix, self.alpha = _as_list_or_one(self.mix, str), _as_list_or_one(self.alpha, float)
        self.epochs = _as_list_or_one(self.epochs, int)
        budgets = self.budgets
        need(all(b >= 1 for b in budgets) and all(a < b for a, b in zip(budgets, budgets[1:])), "epochs",
             "an int >= 1, or for compare increasing epoch counts such as 10,30,90", self.epochs)
        need(self.budget_mode in BUDGET_MODES, "budget_mode", f"one of {BUDGET_MODES}", self.budget_mode)
        need(self.budget_mode == "full" or len(budgets) > 1, "budget_mode",
             "'full' with one --epochs value ('checkpoints' approximates several budgets, e.g. --epochs 10,30,90)",
             self.budget_mode)
        for m in self.mixes:
            need(m in MIXES, "mix", f"one or more (comma-separated) of {MIXES}", m)
        need(len(set(self.mixes)) == len(self.mixes), "mix", "distinct names", self.mix)
        for a in self.alphas:
            need(math.isfinite(a) and a >= 0, "alpha", "finite numbers >= 0", a)
        need(len(set(self.alphas)) == len(self.alphas), "alpha", "distinct values", self.alpha)
        need(self.imbalance is None or self.imbalance >= 1, "imbalance", "None or a number >= 1 (largest class / "
             "smallest class, e.g. 100)", self.imbalance)
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("loss", LOSSES), ("augment", AUGMENTS), ("normalize", NORMALIZES),
                              ("mode", ("batch", "sample", "pair")), ("compile", COMPILES),
                              ("autocast", AUTOCASTS), ("ema_mode", EMA_MODES)):
            need(getattr(self, name) in choices, name, f"one of {choices}", getattr(self, name))
        for name in ("batch_size", "eval_batch_size"):
            need(getattr(self, name) >= 1, name, "an int >= 1", getattr(self, name))
        need(self.batch_size >= 2, "batch_size", "an int >= 2 (a batch of one row is dropped: "
             "BatchNorm cannot train on it, so no step would be taken)", self.batch_size)
        for name in ("lr", "cutmix_alpha", "weight_decay", "momentum"):
            need(getattr(self, name) >= 0, name, "a finite number >= 0", getattr(self, name))
        need(self.lr > 0, "lr", "> 0", self.lr)
        for name in ("p", "switch_prob", "label_noise"):
            need(0 <= getattr(self, name) <= 1, name, "a number in [0, 1]", getattr(self, name))
        need(0 <= self.label_smoothing < 1, "label_smoothing", "a number in [0, 1)", self.label_smoothing)
        need(self.loss == "ce" or self.label_smoothing == 0, "label_smoothing", "0 with --loss bce (it smooths "
             "the cross-entropy's targets)", self.label_smoothing)
        need(0 < self.test_fraction < 1, "test_fraction", "a number in (0, 1)", self.test_fraction)
        need(self.mix_stop_epoch is None or self.mix_stop_epoch >= 0, "mix_stop_epoch", "None or an int >= 0",
             self.mix_stop_epoch)
        need(len(self.seeds) > 0 and all(0 <= s <= MAX_SEED for s in self.seeds),
             "seeds", f"a non-empty list of ints in [0, {MAX_SEED}] (e.g. 0,1,2)", self.seeds)
        need(len(set(self.seeds)) == len(self.seeds), "seeds", "distinct", self.seeds)
        need(self.classes is None or (len(self.classes) >= 2 and all(c >= 0 for c in self.classes)
                                      and len(set(self.classes)) == len(self.classes)),
             "classes", "None or at least two distinct class indices >= 0 (e.g. 3,7)", self.classes)
        need(self.train_size is None or self.train_size >= 1, "train_size", "None or an int >= 1", self.train_size)
        need(self.test_size is None or self.test_size >= 1, "test_size", "None or an int >= 1", self.test_size)
        need(self.eval_subset is None or self.eval_subset >= 1, "eval_subset", "None or an int >= 1",
             self.eval_subset)
        need(self.threads >= 0, "threads", "an int >= 0", self.threads)
        need(self.ema is None or 0 <= self.ema < 1, "ema", "None (off) or a decay in [0, 1) such as 0.95", self.ema)
        need(self.ema is not None or self.ema_mode == "average", "ema_mode",
             "'average' without --ema (give the decay with --ema DECAY)", self.ema_mode)
        need(self.bn_lr_scale > 0, "bn_lr_scale", "a number > 0 (1: the common learning rate)", self.bn_lr_scale)
        need(self.init_batch is None or self.init_batch >= 1, "init_batch", "None or an int >= 1 (training images)",
             self.init_batch)
        need(self.eval_every >= 1, "eval_every", "an int >= 1 (1: every epoch)", self.eval_every)
        need(self.preset is None or self.preset in PRESETS or self.preset in PRESET_ALIASES, "preset",
             f"one of {sorted(PRESETS)}", self.preset)  # an old name: a run's config.json keeps what it recorded
        if self.label_regex is not None:
            try:
                re.compile(self.label_regex)
            except re.error as e:
                raise ValueError(f"--label-regex must be a Python regular expression, got {self.label_regex!r} "
                                 f"({e})") from None
        for m in self.mixes:
            if m != "none":
                info = _registry.get(m)
                need(self.mode in info.modes, "mode", f"one of {info.modes} with {m}", self.mode)
                need(not self.keep_dominant or "keep_dominant" in _options(info), "keep_dominant",
                     f"off with {m} (it applies to mixup only)", self.keep_dominant)
        return self

    @property
    def mixes(self) -> list:
        """``mix`` as a list of names."""
        return list(self.mix) if isinstance(self.mix, (list, tuple)) else [self.mix]

    @property
    def alphas(self) -> list:
        """``alpha`` as a list of floats."""
        return [float(a) for a in self.alpha] if isinstance(self.alpha, (list, tuple)) else [float(self.alpha)]

    @property
    def budgets(self) -> list:
        """``epochs`` as a list of ints (one value: a list of one)."""
        return [int(e) for e in self.epochs] if isinstance(self.epochs, (list, tuple)) else [int(self.epochs)]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, default in OMITTED_DEFAULTS.items():  # at the default: left out, so existing configurations hash as before
            if k in d and d[k] == default:
                del d[k]
        return d


# Presets: each is a partial configuration applied over the defaults.
PRESETS: dict[str, dict] = {
    # make demo: the default fast CNN on the full training set, 4 epochs per arm (~3.5 min on 2 idle CPU cores).
    "demo": dict(model=None, epochs=4, batch_size=512, lr=6e-3, optimizer="adam", schedule="onecycle",
                 mix="mixup", alpha=0.2, mode="batch", seeds=[0]),
    # Article 002 (Keras, Fashion-MNIST): its CNN, Adam 1e-3, batch 64, 10 epochs, alpha 0.2, one
    # lambda per sample, pixels / 255 without mean/std, 58,000 training images (2,000 held out).
    "keras": dict(dataset="fashion-mnist", model="keras-cnn", epochs=10, batch_size=64, lr=1e-3,
                  optimizer="adam", schedule="constant", mix="mixup", alpha=0.2, mode="sample",
                  normalize="unit", augment="none", train_size=58000, seeds=[0, 1, 2]),
    # CIFAR-10 with sigmoid outputs and BCE on one-hot soft labels (article 000): a 4-conv + 2-fc CNN,
    # about 1 sample in 5 mixed (alpha 0.2, one lambda per sample), Adam 1e-3, batch 128, 30 epochs.
    "cifar10-bce": dict(dataset="cifar10", model="article000-cnn", loss="bce", epochs=30, batch_size=128,
                        lr=1e-3, optimizer="adam", schedule="constant", mix="mixup", alpha=0.2,
                        mode="sample", p=0.2, augment="none"),
    # Time to accuracy on 2 CPU cores (docs/RESULTS.md section 3): airbench's recipe on a CPU-sized
    # airbench network (SGD-Nesterov lr 0.75 and wd 1.33e-3 = airbench's values for the lab's mean loss,
    # one-cycle, label smoothing 0.2, flip-TTA in the model); one arm, no mixing.
    "fmnist-fast": dict(dataset="fashion-mnist", model="airbench-cpu", epochs=5, batch_size=512, lr=0.75,
                        optimizer="sgd", momentum=0.85, weight_decay=1.33e-3, schedule="onecycle",
                        label_smoothing=0.2, augment="flip", mix="none", seeds=[0]),
    "cifar10-fast": dict(dataset="cifar10", model="airbench-cpu", epochs=5, batch_size=512, lr=0.75,
                         optimizer="sgd", momentum=0.85, weight_decay=1.33e-3, schedule="onecycle",
                         label_smoothing=0.2, augment="crop-flip", mix="none", seeds=[0]),
    # Issue 21's CIFAR-10 target (>= 90% test accuracy in <= 20 minutes of training on 2 CPU cores,
    # docs/RESULTS.md section 3): cifar10-fast's recipe with the pieces of airbench's the lab gained for it:
    # airbench's lookahead (--ema 0.95 --ema-mode lookahead), whitening from 5,000 un-augmented training
    # images (--init-batch 5000), airbench's 2-pixel reflect translate and alternating flips (--augment
    # translate-flip), its flip-and-translate test-time augmentation (the model), bfloat16 autocast, and
    # evaluation every 4 epochs (the last always); airbench93's widths 64/128/128. BatchNorm biases train at
    # 64x the lr inside the model (airbench's parameter groups). One arm; add --mix mixup / cutmix to compare.
    # 24 epochs: 90.51% after 730.5 s of training on the quiet 2-core Xeon (16 epochs: 89.78% after 496 s).
    "cifar10-90": dict(dataset="cifar10", model="airbench-cpu-wide-tta2", epochs=24, batch_size=512, lr=0.75,
                       optimizer="sgd", momentum=0.85, weight_decay=1.33e-3, schedule="onecycle",
                       label_smoothing=0.2, augment="translate-flip", mix="none", seeds=[0], ema=0.95,
                       ema_mode="lookahead", init_batch=5000, eval_every=4, autocast="bf16"),
    # Article 001 (fastai v1): MNIST 3 vs 7, simple_cnn((3,16,16,2)), alpha 0.4, one lambda per
    # sample with max(lam, 1 - lam), 8 epochs, fastai's defaults (AdamW-style, lr 3e-3, wd 0.01, bs 64).
    "fastai-mnist-sample": dict(dataset="mnist", classes=[3, 7], model="simple-cnn", epochs=8, batch_size=64,
                                lr=3e-3, optimizer="adamw", weight_decay=0.01, schedule="constant",
                                mix="mixup", alpha=0.4, mode="sample", keep_dominant=True, augment="none"),
}

# Former preset names, still accepted (--preset, a --config file, an old run's config.json) but not listed;
# a new configuration records the current name.
PRESET_ALIASES: dict[str, str] = {"article000": "cifar10-bce"}


def preset_name(name: str, what: str = "--preset") -> str:
    """The listed name of preset ``name`` (a former name gives the current one); ``ValueError`` naming
    ``what`` for an unknown one."""
    if name in PRESETS:
        return name
    if name in PRESET_ALIASES:
        return PRESET_ALIASES[name]
    close = difflib.get_close_matches(name, PRESETS, 1)
    raise ValueError(f"{what} must be one of {sorted(PRESETS)}, got {name!r}"
                     + (f" (did you mean {close[0]!r}?)" if close else ""))


_FIELDS = {f.name for f in dataclasses.fields(LabConfig)}
_BOOLS = {"keep_dominant", "quiet", "channels_last", "decay_bias_bn"}
_INTS = {"batch_size", "eval_batch_size", "threads", "eval_every"}
_OPT_INTS = {"train_size", "test_size", "mix_stop_epoch", "eval_subset", "init_batch"}
_OPT_NUMBERS = {"imbalance", "ema"}
_NUMBERS = {"label_noise", "label_smoothing", "test_fraction", "lr", "weight_decay", "momentum", "cutmix_alpha",
            "switch_prob", "p", "bn_lr_scale"}
_INT_LISTS = {"seeds"}
_OPT_INT_LISTS = {"classes"}
_OPT_STRS = {"data_dir", "cache_dir", "label_regex", "label_column", "model", "preset"}
_LISTABLE = {"mix": str, "alpha": float, "epochs": int}  # one value, or (compare) a list
_STRS = (_FIELDS - _BOOLS - _INTS - _OPT_INTS - _NUMBERS - _OPT_NUMBERS - _INT_LISTS - _OPT_INT_LISTS - _OPT_STRS
         - set(_LISTABLE))


def _as_list_or_one(value, kind):
    """``"a,b"`` or ``["a", "b"]`` -> a list (of ``kind``); one value stays a scalar (the config hash of
    single-method runs does not change)."""
    if isinstance(value, str) and "," in value:
        parts = [v.strip() for v in value.split(",") if v.strip()]
        try:
            value = [kind(v) for v in parts]
        except ValueError:
            what = {float: "numbers", int: "integers"}.get(kind, "names")
            raise ValueError(f"expected comma-separated {what}, got {value!r}") from None
    if isinstance(value, (list, tuple)):
        value = list(value)
        if not value:
            raise ValueError("expected at least one value, got an empty list")
        return value[0] if len(value) == 1 else value
    return value


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_type(name: str, value) -> None:
    """Raise ``ValueError`` naming ``--<name>`` unless ``value`` has the field's JSON type.

    Booleans are JSON ``true``/``false`` (never the string ``"false"``), numbers are finite,
    integers are not floats or booleans, lists hold integers.
    """
    option = f"--{name.replace('_', '-')}"
    if name in _BOOLS:
        ok, expected = isinstance(value, bool), "true or false (a JSON boolean, not a string)"
    elif name in _INTS or name in _OPT_INTS:
        ok, expected = _is_int(value) or (name in _OPT_INTS and value is None), "an integer"
    elif name in _NUMBERS or name in _OPT_NUMBERS:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)) or (
            name in _OPT_NUMBERS and value is None)
        expected = "a finite number" + (" or null" if name in _OPT_NUMBERS else "")
    elif name in _LISTABLE:
        if _LISTABLE[name] is int:
            ok = _is_int(value) or (isinstance(value, list) and len(value) > 0 and all(_is_int(v) for v in value))
            expected = ("a non-empty list of integers such as [10, 30, 90]" if isinstance(value, list)
                        else "an integer")
        elif _LISTABLE[name] is float:
            num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
            ok = num(value) or (isinstance(value, list) and len(value) > 0 and all(num(v) for v in value))
            expected = "a non-empty list of finite numbers" if isinstance(value, list) else "a finite number"
        else:
            ok = isinstance(value, str) or (isinstance(value, list) and len(value) > 0
                                            and all(isinstance(v, str) for v in value))
            expected = "a non-empty list of strings" if isinstance(value, list) else "a string"
    elif name in _INT_LISTS or name in _OPT_INT_LISTS:
        ok = (isinstance(value, list) and all(_is_int(v) for v in value)) or (name in _OPT_INT_LISTS and value is None)
        expected = "a list of integers such as [0, 1, 2]"
    elif name in _OPT_STRS:
        ok, expected = value is None or isinstance(value, str), "a string or null"
    else:
        ok, expected = isinstance(value, str), "a string"
    if not ok:
        raise ValueError(f"{option} must be {expected}, got {_brief(value)}")


def _brief(value) -> str:
    """``repr(value)``, cut to a line's worth (a deeply nested or huge value from a file stays readable)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 3, 8, 8, 120, 120
    return r.repr(value)


def load_config_file(path, *, what: Optional[str] = None) -> dict:
    """Read a JSON configuration file: an object whose keys are :class:`LabConfig` fields.

    Every value is type-checked here (:func:`check_type`) and every error names the file;
    ``what`` replaces the ``--config FILE`` prefix of the messages (e.g. for ``--resume``).
    """
    p = Path(path)
    what = what or f"--config {str(path)!r}"
    if not p.is_file():
        raise ValueError(f"{what} must be an existing JSON file, but {str(path)!r} "
                         f"{'is a folder' if p.is_dir() else 'does not exist'}")
    try:
        data = json.loads(p.read_bytes().decode("utf-8"))
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to be a configuration (JSON arrays or objects nested "
                         f"hundreds of levels deep); a configuration is one object of options such as "
                         f'{{"epochs": 3}}') from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not a UTF-8 JSON file: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} is not valid JSON (truncated or edited?): {e}") from None
    except OSError as e:
        raise ValueError(f"{what} cannot be read: {e.strerror or e}") from None
    if isinstance(data, dict) and "config" in data and isinstance(data["config"], dict):
        data = data["config"]  # a run folder's config.json works as a --config file too
    if not isinstance(data, dict):
        raise ValueError(f"{what} must hold a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, _FIELDS, 1)) else "")
                 for k in unknown]
        raise ValueError(f"{what} has unknown keys: {', '.join(hints)}; it may come from another mixlab version "
                         f"(the keys are the option names with underscores, see `mixlab compare --help`)")
    for k, v in data.items():
        try:
            check_type(k, v)
        except ValueError as e:
            raise ValueError(f"{what}: key {k!r}: {e}") from None
    return data


def resolve_config(explicit: dict, *, preset: Optional[str] = None, config_file=None) -> LabConfig:
    """Merge defaults < preset < config file < explicit flags into a validated :class:`LabConfig`.

    The preset is ``preset`` (``--preset``) or else the one the config file names (its ``"preset"``
    key): its values go under the file's, which go under the flags. A former preset name
    (:data:`PRESET_ALIASES`) is accepted and recorded as the current one.
    """
    merged: dict = {}
    from_file = load_config_file(config_file) if config_file is not None else {}
    if preset is not None:
        preset = preset_name(preset)
    elif from_file.get("preset") is not None:
        preset = preset_name(from_file["preset"], f"--config {str(config_file)!r}: key 'preset'")
    if preset is not None:
        merged.update(PRESETS[preset])
    merged.update({k: v for k, v in from_file.items() if k != "preset"})
    merged["preset"] = preset
    unknown = sorted(set(explicit) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown options {unknown}")
    merged.update(explicit)
    return LabConfig(**merged).validate()
