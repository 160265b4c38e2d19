"""Every registered method through every integration, generated from ``mixlab.methods.available()``.

One test per (integration x method); a method registered with ``@register`` is walked through all of
them with no edit here. Each case mixes a tiny batch (B=6 images 3x8x8, tiny models, one step) and
asserts behaviour against the method's own call ``mixer(x, y)`` drawn from the same generator seed:

- plain PyTorch: ``target.loss(criterion, model(mixed))`` back-propagates and equals the criterion on
  ``target.soft(C)`` (cross-entropy; MSE on the mixed targets for regression methods);
- torchvision-style ``mixer((x, y))`` / ``mixer({"image": x, "labels": y})`` with ``soft=True``:
  the same mixed images, ``(B, C)`` rows summing to 1;
- fastai ``MixCallback``: the batch the model sees is the mixed one, the loss is the mixed loss;
- Lightning ``MixCallback``: one fast_dev_run step, the training step receives the mixed batch;
- Keras ``MixedPyDataset``: mixed batches with soft labels summing to 1;
- Hugging Face ``mixup_for_trainer``: collated pixel values mixed, ``loss_func`` the mixed loss;
- ``MixCollate`` in a 2-worker (fork) ``DataLoader``: draws differ across batches and workers and
  repeat with the loader's seed;
- DDP ``GlobalMixer`` on a 2-rank gloo group (one spawn for every method): each rank's rows are the
  slice of the single-process mix of the global batch.

What a method needs is read from the registry, never from its name: ``needs`` (``labels``,
``targets``, ``saliency``: a saliency method is built with ``model=`` so a call with ``(x, y)`` is
enough) and ``task`` (regression methods use float targets and MSE; an integration that is for class
labels by design must refuse them clearly). An integration that hands the mixer only the inputs
must still serve a method that needs more: each integration hands the mixer the labels and applies its
label rule (``target_params``); 0.3's first version of this module found fastai, Hugging Face and DDP
passing the inputs alone and Keras refusing every method but its own two (24 cases, all fixed).

Framework imports happen inside the tests, so the DDP ranks (spawned, importing this module) start
with torch and mixlab only.
"""
from __future__ import annotations

import builtins
import functools
import inspect
import multiprocessing
import os
import socket
import traceback
import warnings

import pytest
import torch
from _spawn import run_to_deadline
import torch.nn.functional as F
from torch import nn

import mixlab
from mixlab.mixer import keeps_label_state
from mixlab import methods

NAMES = methods.available()
B, C, H, W = 6, 4, 8, 8
CLASS_COUNTS = [1.0, 3.0, 9.0, 27.0]  # every pair of classes is >= kappa=3 apart: Remix's rule shows
ALPHA = 4.0  # lam mostly in [0.2, 0.8]: on 8x8 images a box or hole is never empty

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- building from the registry


def _seeded(make):
    """``make()`` under torch's global seed 0, without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make()


def saliency_model() -> nn.Module:
    """A tiny classifier whose input gradient is a saliency map (for methods that need one)."""
    return _seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                         nn.Linear(4 * H * W, C)))


def cam_model() -> nn.Module:
    """A tiny CNN in torchvision's layout (a feature map, ``avgpool``, ``fc``): class activation maps (SnapMix)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.avgpool, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Linear(4, C)

        def forward(self, x):
            return self.fc(self.avgpool(torch.relu(self.conv(x))).flatten(1))
    return _seeded(Net)


def build(name, *, seed=None, **options):
    """The registered method ``name`` configured for this module's batches, drawing from ``seed``.

    Option values come from the constructor's signature and the registry's fields (``needs``, ``task``);
    the default seed is :func:`seed_for`'s.
    """
    seed = seed_for(name) if seed is None else seed
    info = methods.get(name)
    sig = inspect.signature(info.cls).parameters
    extra = {}
    if "class_counts" in sig:
        extra["class_counts"] = CLASS_COUNTS
    if "n_holes" in sig:
        extra["n_holes"] = (1, 2)  # at most half the narrowest cut width on 8x8
    if "patch_size" in sig and sig["patch_size"].default is not None:  # a required patch grid (TokenMix)
        extra["patch_size"] = 4
    if "block_num" in sig:
        extra.update(block_num=(2,), neigh_size=1)  # 2x2 blocks of 4x4 pixels
    if "saliency" in info.needs and "model" in sig:  # the saliency from the labels: t(x, y) is enough
        extra["model"] = cam_model() if "classifier" in sig else saliency_model()  # SnapMix's CAMs need a linear head
    if info.task == "classification":
        extra["num_classes"] = C
    return info.build(alpha=ALPHA, generator=torch.Generator().manual_seed(seed), **{**extra, **options})


@functools.lru_cache(maxsize=None)
def seed_for(name) -> int:
    """The first generator seed whose draw mixes this module's batch (on 8x8 images some draws paste an empty
    box, e.g. ResizeMix's 1-pixel sides, or give PuzzleMix's 2x2-block graph cut an all-original mask)."""
    x, y = batch(name)
    for seed in range(5, 50):
        mixed, _ = build(name, seed=seed)(x.clone(), y.clone())
        if not torch.equal(mixed, x):
            return seed
    raise AssertionError(f"{name}: no seed in 5..49 mixes a {tuple(x.shape)} batch")


def is_regression(name) -> bool:
    return methods.get(name).task == "regression"


def batch(name):
    """``(x, y)``: images ``(B, 3, H, W)``; class indices, or float targets ``(B, 1)`` for regression."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(B, 3, H, W, generator=g)
    if is_regression(name):
        return x, torch.linspace(0.0, 2.5, B).unsqueeze(1)
    return x, torch.tensor([0, 1, 2, 3, 0, 1])


def out_dim(name) -> int:
    return 1 if is_regression(name) else C


def tiny_model(name) -> nn.Module:
    return _seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * H * W, out_dim(name))))


def criterion(name):
    return nn.MSELoss() if is_regression(name) else nn.CrossEntropyLoss()


def soft_of(name, target) -> torch.Tensor:
    """The dense training signal of a target: ``(B, C)`` class rows, or the mixed float targets."""
    return target.soft() if is_regression(name) else target.soft(C)


def reference(name, *, seed=None, x=None, y=None):
    """``mixer(x, y)`` of a fresh mixer with the same seed: what every integration must reproduce."""
    if x is None:
        x, y = batch(name)
    return build(name, seed=seed)(x.clone(), y.clone())


def label_mass(target) -> torch.Tensor:
    """What each soft row sums to: 1, or the sum of the label weights where a method sets them (SnapMix)."""
    weights = target.params.label_weights
    return torch.ones(B) if weights is None else weights.sum(1)


def check_close(a, b, *, what=""):
    torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")


def cases(integration=None, *, extra=None):
    out = []
    for name in NAMES:
        marks = [] if extra is None else [extra]
        out.append(pytest.param(name, marks=marks, id=name))
    return out


# --------------------------------------------------------------------------- plain PyTorch


@pytest.mark.parametrize("name", cases())
def test_plain_training_step(name):
    x, y = batch(name)
    mixed, target = build(name)(x.clone(), y)
    assert mixed.shape == x.shape and not torch.equal(mixed, x), "the batch was not mixed"
    model = tiny_model(name)
    pred = model(mixed)
    loss = target.loss(criterion(name), pred)
    soft = soft_of(name, target)
    if is_regression(name):
        expected = F.mse_loss(pred.double(), soft.double())
        assert not torch.equal(soft, y), "the targets were not mixed"
    else:
        expected = F.cross_entropy(pred.double(), soft.double())
        assert soft.shape == (B, C) and bool((soft >= 0).all())
        check_close(soft.sum(1), label_mass(target), what="soft rows sum to 1")
    check_close(loss, expected, what="target.loss equals the loss on target.soft")
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)


# --------------------------------------------------------------------------- torchvision-style batch alone


@pytest.mark.parametrize("name", cases())
def test_batch_alone_pair_and_dict(name):
    x, y = batch(name)
    ref_x, ref_t = reference(name)
    ref_soft = soft_of(name, ref_t)
    if is_regression(name):  # no class rows: soft= is not an option, the target stays a MixedTarget
        with pytest.raises(TypeError, match="has no option 'soft'"):
            build(name, soft=True)
        options = {}
    else:
        options = {"soft": True}
    out = build(name, **options)((x.clone(), y))
    assert type(out) is tuple and len(out) == 2
    pair_x, pair_y = out
    out = build(name, **options)({"image": x.clone(), "labels": y, "id": "batch-0"})
    assert set(out) == {"image", "labels", "id"} and out["id"] == "batch-0"
    dict_x, dict_y = out["image"], out["labels"]
    for mixed, labels, kind in ((pair_x, pair_y, "pair"), (dict_x, dict_y, "dict")):
        assert torch.equal(mixed, ref_x), f"{kind}: not the mixed images of mixer(x, y) from the same seed"
        assert not torch.equal(mixed, x)
        if is_regression(name):
            assert isinstance(labels, mixlab.MixedTarget)
            labels = labels.soft()
        else:
            assert isinstance(labels, torch.Tensor) and labels.shape == (B, C) and labels.dtype == torch.float32
            check_close(labels.sum(1), label_mass(ref_t), what=f"{kind}: soft rows sum to 1")
        check_close(labels, ref_soft, what=f"{kind}: labels")


# --------------------------------------------------------------------------- fastai


def _fastai():
    with warnings.catch_warnings():  # fastai's import calls torch.jit.script; pandas warns about an option
        warnings.simplefilter("ignore")
        pytest.importorskip("fastai")
        import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
        from fastai.callback.core import Callback
        from fastai.data.core import DataLoaders
        from fastai.data.load import DataLoader
        from fastai.learner import Learner

        import mixlab.fastai
    return Callback, DataLoaders, DataLoader, Learner, mixlab.fastai.MixCallback


class _Seen(nn.Module):
    """Wraps a model and records the training inputs it receives."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.net(x)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("name", cases("fastai"))
def test_fastai_mix_callback(name, tmp_path):
    Callback, DataLoaders, DataLoader, Learner, MixCallback = _fastai()
    x, y = batch(name)
    ref_x, ref_t = reference(name)

    class Capture(Callback):
        order = 50  # after MixCallback's after_loss

        def __init__(self):
            self.records = []

        def after_loss(self):
            if self.training:
                self.records.append((self.learn.pred.detach().clone(), self.learn.loss.detach().clone()))

    items = list(zip(x, y))
    dls = DataLoaders(DataLoader(items, bs=B, shuffle=False), DataLoader(items, bs=B), device=torch.device("cpu"))
    model = _Seen(tiny_model(name))
    before = [p.detach().clone() for p in model.parameters()]
    cap = Capture()
    learn = Learner(dls, model, loss_func=criterion(name), path=tmp_path, cbs=[MixCallback(build(name)), cap])
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, lr=1e-2)
    assert len(model.seen) == 1 and len(cap.records) == 1
    seen = model.seen[0]
    assert not torch.equal(seen, x), "the model saw the unmixed batch"
    assert torch.equal(seen, ref_x), "the model did not see mixer(x, y)'s mixed batch"
    pred, loss = cap.records[0]
    check_close(loss, ref_t.loss(criterion(name), pred), what="fastai's loss is the mixed loss")
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters())), "no optimizer step"
    assert isinstance(learn.loss_func, type(criterion(name)))  # the Learner's loss is left alone


# --------------------------------------------------------------------------- Lightning

_LIGHTNING = {}


def _lightning_module():
    if "cls" in _LIGHTNING:
        return _LIGHTNING["cls"]
    L = pytest.importorskip("lightning.pytorch")

    class Net(L.LightningModule):
        def __init__(self, name):
            super().__init__()
            self.name, self.net, self.crit, self.seen = name, tiny_model(name), criterion(name), []

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, target = batch
            pred = self(x)
            loss = target.loss(self.crit, pred)
            self.seen.append((x.detach().clone(), target, pred.detach().clone(), loss.detach().clone()))
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    _LIGHTNING["L"], _LIGHTNING["cls"] = L, Net
    return Net


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # lightning 2.6 on torch 2.14
@pytest.mark.parametrize("name", cases("lightning"))
def test_lightning_mix_callback(name, tmp_path):
    Net = _lightning_module()
    L = _LIGHTNING["L"]
    from mixlab.lightning import MixCallback

    x, y = batch(name)
    ref_x, ref_t = reference(name)
    module = Net(name)
    before = [p.detach().clone() for p in module.parameters()]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=B)
    trainer = L.Trainer(fast_dev_run=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[MixCallback(build(name))])
    trainer.fit(module, loader)
    assert len(module.seen) == 1
    seen_x, target, pred, loss = module.seen[0]
    assert isinstance(target, mixlab.MixedTarget)
    assert not torch.equal(seen_x, x) and torch.equal(seen_x, ref_x), "the training step did not get mixer(x, y)"
    check_close(soft_of(name, target), soft_of(name, ref_t), what="the target")
    check_close(loss, ref_t.loss(criterion(name), pred), what="the mixed loss")
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, module.parameters())), "no optimizer step"
    assert "on_after_batch_transfer" not in module.__dict__  # the callback's wrapper is gone after fit


# --------------------------------------------------------------------------- Keras (torch backend)


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("name", cases("keras"))
def test_keras_mixed_pydataset(name):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"KERAS_BACKEND is {keras.backend.backend()!r}; this test runs on the torch backend")
    from mixlab.keras import MixedPyDataset

    x, y = batch(name)
    ref_x, ref_t = reference(name)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):  # Keras's channels_last layout (B, H, W, C)
            return x.permute(0, 2, 3, 1).numpy().copy(), y.clone().numpy()

    assert keras.config.image_data_format() == "channels_last"
    options = {} if is_regression(name) else {"soft": True}
    ds = MixedPyDataset(Batches(), build(name, **options))
    assert len(ds) == 1
    mixed, labels = ds[0]
    mixed = torch.as_tensor(keras.ops.convert_to_numpy(mixed)).permute(0, 3, 1, 2)  # back to (B, C, H, W)
    assert not torch.equal(mixed, x) and torch.equal(mixed, ref_x)
    if is_regression(name):
        labels = labels.soft() if isinstance(labels, mixlab.MixedTarget) else torch.as_tensor(labels)
    else:
        labels = torch.as_tensor(keras.ops.convert_to_numpy(labels))
        assert labels.shape == (B, C)
        check_close(labels.sum(1), label_mass(ref_t), what="soft rows sum to 1")
    check_close(labels, soft_of(name, ref_t), what="labels")


# --------------------------------------------------------------------------- Hugging Face


def _transformers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("transformers")
        pytest.importorskip("accelerate")
        import mixlab.transformers
    return mixlab.transformers


@pytest.mark.parametrize("name", cases("transformers"))
def test_transformers_collator_and_loss(name):
    hf = _transformers()
    x, y = batch(name)
    collator, loss_func = hf.mixup_for_trainer(build(name), num_classes=C)
    features = [{"pixel_values": x[i].clone(), "labels": y[i].item() if y.ndim == 1 else y[i].clone()}
                for i in range(B)]
    if is_regression(name):  # HF heads take float labels as multi-label BCE: refused by design
        with pytest.raises(ValueError, match="expects integer class ids"):
            collator(features)
        return
    ref_x, ref_t = reference(name)
    out = collator(features)
    mixed = out["pixel_values"]
    assert not torch.equal(mixed, x) and torch.equal(mixed, ref_x), "the collated pixel values are not mixer(x, y)'s"
    assert isinstance(out["labels"], hf.MixedLabels)
    check_close(out["labels"].target.soft(C), ref_t.soft(C), what="the mixed labels")
    logits = tiny_model(name)(mixed)
    loss = loss_func({"logits": logits}, out["labels"])
    check_close(loss, F.cross_entropy(logits.double(), ref_t.soft(C).double()), what="the mixed cross-entropy")
    loss.backward()


# --------------------------------------------------------------------------- timm-style: MixCollate in workers


class _Repeated(torch.utils.data.Dataset):
    """24 rows: four copies of the same 6-row batch, so two batches differ only by their draws."""

    def __init__(self, name):
        self.x, self.y = batch(name)

    def __len__(self):
        return 4 * B

    def __getitem__(self, i):
        return self.x[i % B], self.y[i % B]


def _collate_run(name, loader_seed):
    """Every batch of one pass of a seeded 2-worker (fork) loader: ``(mixed, soft, (lam, index))``."""
    from mixlab.data import MixCollate

    loader = torch.utils.data.DataLoader(_Repeated(name), batch_size=B, num_workers=2,
                                         collate_fn=MixCollate(build(name)), multiprocessing_context="fork",
                                         generator=torch.Generator().manual_seed(loader_seed))
    return [(mixed, soft_of(name, t), (t.params.lam, t.params.index)) for mixed, t in loader]


def _same(a, b) -> bool:
    """Two batches from the same rows drew the same: the same mixed images and the same lam and partners."""
    return torch.equal(a[0], b[0]) and all(torch.equal(u, v) for u, v in zip(a[2], b[2]))


@pytest.mark.parametrize("name", cases("collate"))
def test_mix_collate_in_workers(name):
    x, _ = batch(name)
    if "saliency" in methods.get(name).needs:  # its model's saliency in a worker: stale weights, so refused
        with pytest.raises(RuntimeError, match="cannot run in a DataLoader worker"):
            _collate_run(name, 7)
        return
    first = _collate_run(name, 7)
    assert len(first) == 4  # batches 0, 2 from worker 0; 1, 3 from worker 1; all four from the same rows
    assert any(not torch.equal(b[0], x) for b in first), "no batch was mixed"
    assert not _same(first[0], first[1]), "the two workers drew the same (worker 0's first batch == worker 1's)"
    assert not _same(first[0], first[2]) and not _same(first[1], first[3]), "a worker repeated its draws"
    again = _collate_run(name, 7)
    for a, b in zip(first, again):
        assert _same(a, b) and torch.equal(a[1], b[1]), "the same loader seed did not repeat the draws"
    other = _collate_run(name, 8)
    assert not all(_same(a, b) for a, b in zip(first, other)), "the loader's seed does not reach the draws"


# --------------------------------------------------------------------------- DDP: GlobalMixer on 2 ranks

SPLIT = (4, 2)  # uneven on purpose: rank 0 holds rows 0..3, rank 1 rows 4..5
DEADLINE_S = 120.0


def _logits(name):
    return torch.randn(B, out_dim(name), generator=torch.Generator().manual_seed(2))


def _ddp_rank(rank):
    """One rank: every registered method through GlobalMixer on this rank's rows."""
    import mixlab.distributed as D

    start = sum(SPLIT[:rank])
    rows = slice(start, start + SPLIT[rank])
    out = {}
    for name in NAMES:
        x, y = batch(name)
        try:
            mixed, target = D.GlobalMixer(build(name))(x[rows].clone(), y[rows].clone())
            crit = F.mse_loss if is_regression(name) else F.cross_entropy
            out[name] = {"x": mixed, "soft": soft_of(name, target),
                         "loss": target.loss(crit, _logits(name)[rows], reduction="none")}
        except Exception as e:  # reported per method; both ranks fail alike, so the group stays in step
            out[name] = {"error_type": type(e).__name__, "error": str(e)}
        torch.distributed.barrier()
    return out


def _ddp_entry(rank, port, path):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        import datetime

        torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
        result = {"ok": True, "result": _ddp_rank(rank)}
    except Exception:
        result = {"ok": False, "error": traceback.format_exc()}
    torch.save(result, path + ".tmp")
    os.replace(path + ".tmp", path)
    os._exit(0)  # skip process-group teardown: a dead peer must not make this exit hang


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One 2-process gloo job (spawn) runs every method; each method's test reads its results."""
    out_dir = tmp_path_factory.mktemp("ddp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    paths = [str(out_dir / f"rank{r}.pt") for r in range(2)]
    procs = [ctx.Process(target=_ddp_entry, args=(r, port, paths[r])) for r in range(2)]
    run_to_deadline(procs, DEADLINE_S)
    results = []
    for r, path in enumerate(paths):
        assert os.path.exists(path), f"rank {r} wrote no result"
        o = torch.load(path, weights_only=True)
        assert o["ok"], f"rank {r} failed:\n{o['error']}"
        results.append(o["result"])
    return results


@pytest.mark.parametrize("name", cases("distributed"))
def test_ddp_global_mixer_shards_equal_the_global_mix(name, two_ranks):
    got = [r[name] for r in two_ranks]
    if keeps_label_state(build(name)):  # RecursiveMix: earlier batches' labels are on no rank's slice: refused
        assert all(g.get("error_type") == "ValueError" and "GlobalMixer cannot shard" in g["error"] for g in got), got
        return
    for rank, g in enumerate(got):
        if "error" in g:  # the rank's exception, raised here (the same type) for the test's verdict
            raise getattr(builtins, g["error_type"], RuntimeError)(f"rank {rank}: {g['error']}")
    x, y = batch(name)
    ref_x, ref_t = reference(name)
    assert not torch.equal(ref_x, x)
    assert torch.equal(torch.cat([g["x"] for g in got]), ref_x), "the ranks' rows are not the slices of mixer(x, y)"
    check_close(torch.cat([g["soft"] for g in got]), soft_of(name, ref_t), what="the ranks' targets")
    crit = F.mse_loss if is_regression(name) else F.cross_entropy
    check_close(torch.cat([g["loss"] for g in got]), ref_t.loss(crit, _logits(name), reduction="none"),
                what="the ranks' per-row losses")
