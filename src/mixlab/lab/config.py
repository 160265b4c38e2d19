"""The lab's configuration: one dataclass holding every option, presets, and merging.

Precedence, lowest first: the dataclass defaults, ``--preset``, ``--config FILE`` (JSON), then
the flags given on the command line. The resolved configuration is written to the run
folder's ``config.json``.

Convention: ``alpha`` parameterises Beta(alpha, alpha) for ``lam``, the weight of the
ORIGINAL row (``mixed = lam * x + (1 - lam) * x[index]``), as everywhere in mixlab.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

__all__ = ["LabConfig", "PRESETS", "MIXES", "resolve_config", "load_config_file"]

MIXES = ("none", "mixup", "cutmix", "mixup-or-cutmix")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
LOSSES = ("ce", "bce")
AUGMENTS = ("auto", "none", "crop-flip", "flip")
NORMALIZES = ("dataset", "unit")


@dataclasses.dataclass
class LabConfig:
    """Every option of ``mixlab compare`` / ``mixlab train`` (the CLI flag is the field name with dashes).

    Attributes:
        dataset, data_dir, classes, label_noise, train_size, cache_dir, label_regex, label_column,
            test_fraction:
            passed to :func:`mixlab.data.load_dataset`; ``classes`` keeps a subset (relabelled
            0..n-1), ``label_noise`` corrupts that fraction of training labels (fixed by the seed).
        model: a name from :data:`mixlab.lab.models.MODELS`; ``None`` picks the dataset's default.
        mix: ``"mixup"``, ``"cutmix"``, ``"mixup-or-cutmix"`` (``"none"`` only for ``train``).
        alpha: Beta(alpha, alpha) for ``lam`` (the original row's weight); ``cutmix_alpha`` the
            CutMix branch of ``mixup-or-cutmix``; ``mode`` batch|sample|pair; ``keep_dominant``
            fastai's ``max(lam, 1 - lam)``; ``p`` the probability a row (batch) is mixed.
        loss: ``"ce"`` (cross-entropy, mixed through ``MixedTarget.loss``) or ``"bce"`` (sigmoid
            outputs + binary cross-entropy on soft one-hot labels, article 000).
        augment: ``"auto"`` (crop+flip for 3-channel images >= 32 px, nothing otherwise),
            ``"none"``, ``"crop-flip"``, ``"flip"``. ``normalize``: ``"dataset"`` mean/std or
            ``"unit"`` (pixels / 255 only, as the Keras article).
        threads: ``torch.set_num_threads`` (0 keeps torch's default).
    """

    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None
    classes: Optional[list] = None
    label_noise: float = 0.0
    train_size: Optional[int] = None
    cache_dir: Optional[str] = None
    label_regex: Optional[str] = None
    label_column: Optional[str] = None
    test_fraction: float = 0.2
    model: Optional[str] = None
    epochs: int = 3
    batch_size: int = 128
    eval_batch_size: int = 1000
    lr: float = 3e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "onecycle"
    loss: str = "ce"
    augment: str = "auto"
    normalize: str = "dataset"
    mix: str = "mixup"
    alpha: float = 0.2
    cutmix_alpha: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    keep_dominant: bool = False
    p: float = 1.0
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    out: str = "runs/latest"
    device: str = "cpu"
    threads: int = 0
    quiet: bool = False
    preset: Optional[str] = None

    def validate(self) -> "LabConfig":
        """Check every field; raise ``ValueError`` naming the option, what was expected and what came."""
        def need(ok, option, expected, got):
            if not ok:
                raise ValueError(f"--{option.replace('_', '-')} must be {expected}, got {got!r}")

        for name, choices in (("mix", MIXES), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("loss", LOSSES), ("augment", AUGMENTS), ("normalize", NORMALIZES),
                              ("mode", ("batch", "sample", "pair"))):
            need(getattr(self, name) in choices, name, f"one of {choices}", getattr(self, name))
        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an int >= 1", v)
        for name in ("lr", "alpha", "cutmix_alpha", "weight_decay", "momentum"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, name, "a number >= 0", v)
        need(self.lr > 0, "lr", "> 0", self.lr)
        for name in ("p", "switch_prob", "label_noise"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and 0 <= v <= 1, name, "a number in [0, 1]", v)
        need(isinstance(self.seeds, list) and len(self.seeds) > 0 and
             all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds),
             "seeds", "a non-empty list of ints >= 0 (e.g. 0,1,2)", self.seeds)
        need(len(set(self.seeds)) == len(self.seeds), "seeds", "distinct", self.seeds)
        need(self.classes is None or (isinstance(self.classes, list) and len(self.classes) >= 2),
             "classes", "None or at least two class indices (e.g. 3,7)", self.classes)
        need(self.train_size is None or (isinstance(self.train_size, int) and self.train_size >= 1),
             "train_size", "None or an int >= 1", self.train_size)
        need(isinstance(self.threads, int) and self.threads >= 0, "threads", "an int >= 0", self.threads)
        if self.mix in ("cutmix", "mixup-or-cutmix"):
            need(self.mode != "pair", "mode", "'batch' or 'sample' with CutMix", self.mode)
            need(not self.keep_dominant, "keep_dominant", "off with CutMix (it applies to mixup only)",
                 self.keep_dominant)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    # Article 000 (CIFAR-10): 4-conv + 2-fc CNN with sigmoid outputs and BCE on one-hot soft labels,
    # about 1 sample in 5 mixed (alpha 0.2, one lambda per sample), Adam 1e-3, batch 128, 30 epochs.
    "article000": dict(dataset="cifar10", model="article000-cnn", loss="bce", epochs=30, batch_size=128,
                       lr=1e-3, optimizer="adam", schedule="constant", mix="mixup", alpha=0.2,
                       mode="sample", p=0.2, augment="none"),
    # Article 001 (fastai v1): MNIST 3 vs 7, simple_cnn((3,16,16,2)), alpha 0.4, one lambda per
    # sample with max(lam, 1 - lam), 8 epochs, fastai's defaults (AdamW-style, lr 3e-3, wd 0.01, bs 64).
    "fastai-mnist-sample": dict(dataset="mnist", classes=[3, 7], model="simple-cnn", epochs=8, batch_size=64,
                                lr=3e-3, optimizer="adamw", weight_decay=0.01, schedule="constant",
                                mix="mixup", alpha=0.4, mode="sample", keep_dominant=True, augment="none"),
}

_FIELDS = {f.name for f in dataclasses.fields(LabConfig)}


def load_config_file(path) -> dict:
    """Read a JSON configuration file: an object whose keys are :class:`LabConfig` fields."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config must name an existing JSON file, got {str(path)!r}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--config {str(path)!r} is not valid JSON: {e}") from e
    if isinstance(data, dict) and "config" in data and isinstance(data["config"], dict):
        data = data["config"]  # a run folder's config.json works as a --config file too
    if not isinstance(data, dict):
        raise ValueError(f"--config {str(path)!r} must hold a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ValueError(f"--config {str(path)!r} has unknown keys {unknown}; known keys: {sorted(_FIELDS)}")
    return data


def resolve_config(explicit: dict, *, preset: Optional[str] = None, config_file=None) -> LabConfig:
    """Merge defaults < preset < config file < explicit flags into a validated :class:`LabConfig`."""
    merged: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
        merged.update(PRESETS[preset])
        merged["preset"] = preset
    if config_file is not None:
        merged.update(load_config_file(config_file))
    unknown = sorted(set(explicit) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown options {unknown}")
    merged.update(explicit)
    return LabConfig(**merged).validate()
