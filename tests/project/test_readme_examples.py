"""Every ```python block of README.md, docs/coming-from.md and docs/recipes.md runs.

Each block is executed (``exec``, a fresh namespace per block, the working directory a temporary
folder) after a small context that provides what the surrounding prose assumes: ``x``, ``y``,
``model``, ``loader``, ``opt``... (``CONTEXTS``, chosen by a substring of the block, else the
default classification context). A block that cannot run here is listed in ``NOT_RUNNABLE`` with
the reason; nothing is skipped silently: a new block runs with the default context and fails the
test if it does not run, and an entry in ``NOT_RUNNABLE`` or ``CONTEXTS`` that matches no block
fails ``test_every_listed_block_exists``.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
FILES = ["README.md", "docs/coming-from.md", "docs/recipes.md"]

# substring of a block -> why it cannot run in this test
NOT_RUNNABLE = {
    "model = DDP(model)": "DistributedDataParallel needs a process group (torchrun); tests/integrations/test_distributed.py runs "
                          "these pieces (GlobalMixUp, ddp_mean, all_reduce_sum) in 2 gloo processes",
}


def _blocks():
    out = []
    for name in FILES:
        text = (ROOT / name).read_text()
        for i, m in enumerate(re.finditer(r"```python\n(.*?)```", text, re.S)):
            out.append(pytest.param(m.group(1), id=f"{name}#{i}"))
    return out


def _prelude():
    """What the README's earlier blocks import (its quick start), available to every block."""
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, default_collate

    import mixlab

    return dict(torch=torch, nn=nn, F=F, mixlab=mixlab, DataLoader=DataLoader, default_collate=default_collate)


def _classify():
    import torch.nn as nn

    g = torch.Generator().manual_seed(0)
    B = 8
    x, y = torch.rand(B, 3, 16, 16, generator=g), torch.randint(0, 10, (B,), generator=g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    return dict(
        g=g, B=B, x=x, y=y, target=y, model=model, loader=[(x, y), (x, y)],
        opt=torch.optim.SGD(model.parameters(), lr=0.1), criterion=nn.CrossEntropyLoss(),
        a=torch.randn(B, 1, 64, generator=g), ids=torch.randint(0, 100, (B, 5), generator=g),
        x1=x, y1=y, x2=torch.rand(B, 3, 16, 16, generator=g), y2=torch.randint(0, 10, (B,), generator=g),
        counts=torch.tensor([100, 50, 30, 20, 10, 8, 6, 4, 2, 1]), cls_attention=torch.rand(B, 16, generator=g),
        ds=[(x[i], int(y[i])) for i in range(B)],
    )


def _segmentation():
    import torch.nn as nn

    g = torch.Generator().manual_seed(0)
    image = torch.rand(4, 3, 16, 16, generator=g)
    mask = torch.randint(0, 21, (4, 16, 16), generator=g)
    mask[:, :2] = 255
    return dict(g=g, loader=[(image, mask)], model=nn.Conv2d(3, 21, 1))


def _detection():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(4)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0], [20.0, 10.0, 60.0, 50.0]]),
                "labels": torch.tensor([1, 2])} for _ in range(4)]
    ctx = dict(images=images, targets=targets)
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=3)
    model.train()
    ctx["model"] = model
    return ctx


def _timm():
    return dict(x=torch.rand(4, 3, 16, 16), target=torch.randint(0, 1000, (4,)))


def _fastai():
    pytest.importorskip("fastai")
    import torch.nn as nn
    import fastai.callback.schedule  # noqa: F401  (fit_one_cycle, as `from fastai.vision.all import *` gives)
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from torch.utils.data import DataLoader

    ctx = _classify()
    ds = list(zip(ctx["x"], ctx["y"]))
    dls = DataLoaders(DataLoader(ds, batch_size=4, shuffle=True), DataLoader(ds, batch_size=4))
    return dict(ctx, dls=dls, Learner=Learner, accuracy=accuracy, nn=nn,
                resnet34=None, vision_learner=None)


def _keras():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("this test runs Keras on the torch backend (KERAS_BACKEND=torch)")
    import numpy as np

    class Batches(keras.utils.PyDataset):
        def __init__(self, seed):
            super().__init__()
            rng = np.random.default_rng(seed)
            self.x, self.y = rng.random((16, 4), dtype=np.float32), rng.integers(0, 10, 16)

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return self.x[i * 8:(i + 1) * 8], self.y[i * 8:(i + 1) * 8]

    batches, other = Batches(0), Batches(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    return dict(batches=batches, other_shuffle=other, model=model)


def _lightning():
    L = pytest.importorskip("lightning")
    ctx = _classify()
    return dict(ctx, L=L, self=ctx["model"])


def _hf():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, num_labels=10)
    data = [{"pixel_values": torch.rand(1, 16, 16), "labels": i % 10} for i in range(8)]
    args = transformers.TrainingArguments(output_dir="hf", report_to=[], use_cpu=True, disable_tqdm=True)
    return dict(transformers=transformers, model=transformers.ViTForImageClassification(cfg), args=args,
                train=data, val=data, L=pytest.importorskip("lightning"))


def _mixcollate():
    import torch.nn as nn

    g = torch.Generator().manual_seed(0)
    ds = [(torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=g), i % 10) for i in range(16)]
    return dict(ds=ds, criterion=nn.CrossEntropyLoss(), model=nn.Sequential(nn.Flatten(), nn.Linear(192, 10)))


def _tokens():
    import torch.nn as nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.head = nn.Linear(16, 2)

        def forward(self, ids, src_key_padding_mask=None):
            h = self.enc(self.emb(ids), src_key_padding_mask=src_key_padding_mask)
            return self.head(h.mean(1))

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (4, 6), generator=g)
    pad = torch.zeros(4, 6, dtype=torch.bool)
    pad[:, 4:] = True
    return dict(model=Tiny(), ids=ids, y=torch.tensor([0, 1, 0, 1]), pad=pad, g=g,
                criterion=nn.CrossEntropyLoss())


# substring of a block -> the context it runs in (default: _classify)
CONTEXTS = {
    "criterion = nn.CrossEntropyLoss(ignore_index=255)": _segmentation,
    "detection.Mosaic()(images, targets)": _detection,
    "from mixlab.timm import Mixup": _timm,
    "from mixlab.fastai import MixUp, CutMix": _fastai,
    "from mixlab.keras import MixUp, MixedPyDataset": _keras,
    "trainer = L.Trainer(callbacks=[mixlab.lightning.MixUp(0.4)])": _lightning,
    "transformers.Trainer(model=model": _hf,
    "L.Trainer(callbacks=[mixlab.lightning.MixUp(0.4, stop_epoch=8)])": _hf,
    "collate = MixCollate(": _mixcollate,
    "mm = mixlab.ManifoldMixup(": _tokens,
}


# warnings that third-party libraries raise here (warnings are errors in this suite), per context
IGNORED_WARNINGS = {
    _fastai: [(".*torch.jit.script.*is deprecated", FutureWarning),  # fastai's import, torch 2.14
              (".*mode.chained_assignment.*", Warning)],  # fastai's import, pandas 3
    _lightning: [(".*tensorboardX.*", UserWarning)],  # lightning's default logger without tensorboard
    _keras: [("", DeprecationWarning)],  # keras' progress bar calls np.mean on torch tensors (numpy 2)
}


def _pick(table, code):
    hits = [v for k, v in table.items() if k in code]
    assert len(hits) <= 1, "a block matches several entries; make the keys more specific"
    return hits[0] if hits else None


def test_every_listed_block_exists():
    codes = [p.values[0] for p in _blocks()]
    for key in [*NOT_RUNNABLE, *CONTEXTS]:
        assert any(key in c for c in codes), f"no python block contains {key!r}: update the table"


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("code", _blocks())
def test_block_runs(code, tmp_path, monkeypatch):
    reason = _pick(NOT_RUNNABLE, code)
    if reason is not None:
        pytest.skip(f"listed as not runnable here: {reason}")
    monkeypatch.chdir(tmp_path)
    make = _pick(CONTEXTS, code) or _classify
    with warnings.catch_warnings():
        for message, category in IGNORED_WARNINGS.get(make, ()):
            warnings.filterwarnings("ignore", message, category)
        namespace = {"__name__": "readme_example", **_prelude(), **make()}
        exec(compile(code, "<readme block>", "exec"), namespace)
