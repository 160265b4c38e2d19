"""fastai callbacks: train digits for an epoch, validation and lr_find untouched, bs=1, targets' kinds."""
from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch import nn

with warnings.catch_warnings():  # fastai's import calls torch.jit.script, deprecated in this torch
    warnings.simplefilter("ignore")  # and pandas 3 warns about an option fastai sets
    pytest.importorskip("fastai")
    import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
    import fastai.callback.schedule  # noqa: F401  (Learner.lr_find)
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader as FastaiDataLoader
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy

    import mixlab
    from mixlab.fastai import CutMix, MixCallback, MixUp

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.usefixtures("one_thread")]



def _digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16
    return x, torch.tensor(d.target)


def _dls(x, y, bs=64, n_train=1400):
    random.seed(0)  # fastai's DataLoader draws its shuffling seed from `random`
    torch.manual_seed(0)
    train = list(zip(x[:n_train], y[:n_train]))
    valid = list(zip(x[n_train:], y[n_train:]))
    return DataLoaders(FastaiDataLoader(train, bs=bs, shuffle=True, drop_last=False), FastaiDataLoader(valid, bs=256),
                       device=torch.device("cpu"))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))


class _Capture(Callback):
    order = 50  # after the mixing callback

    def __init__(self):
        self.records = []

    def after_loss(self):
        if self.training:
            mix_cb = next(cb for cb in self.learn.cbs if isinstance(cb, MixCallback))
            self.records.append((self.learn.pred.detach(), self.learn.yb[0], mix_cb._mixed_target,
                                 self.learn.loss.detach()))


def test_mixup_fits_digits_with_plain_cross_entropy(tmp_path):
    x, y = _digits()
    loss_func = nn.CrossEntropyLoss()
    cap = _Capture()
    learn = Learner(_dls(x, y), _model(), loss_func=loss_func, metrics=accuracy, path=tmp_path,
                    cbs=[MixUp(0.4, generator=torch.Generator().manual_seed(0)), cap])
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, lr=3e-3)
    losses = torch.stack([r[3] for r in cap.records])
    assert losses[-5:].mean() < 0.75 * losses[:5].mean()
    assert learn.recorder.values[-1][2] > 0.8  # validation accuracy (chance: 0.1)
    assert learn.loss_func is loss_func
    # the loss fastai back-propagated is the mixed loss of the recorded batch
    pred, y_b, target, loss = cap.records[3]
    lam, idx = target.lam, target.params.index
    ce = nn.functional.cross_entropy
    expected = (lam * ce(pred, y_b, reduction="none") + (1 - lam) * ce(pred, y_b[idx], reduction="none")).mean()
    torch.testing.assert_close(loss, expected)
    assert (lam >= 0.5).all() and (lam < 1).any()  # fastai's keep-dominant, one lam per sample


@pytest.mark.filterwarnings("ignore:numpy.core is deprecated:DeprecationWarning")  # fastai's LRFinder reload
def test_validation_and_lr_find_leave_the_learner_as_it_was(tmp_path):
    x, y = _digits()
    loss_func = CrossEntropyLossFlat()
    plain = Learner(_dls(x, y), _model(), loss_func=loss_func, metrics=accuracy, path=tmp_path)
    learn = Learner(_dls(x, y), _model(), loss_func=loss_func, metrics=accuracy, path=tmp_path, cbs=MixUp(0.4))
    with learn.no_bar(), learn.no_logging(), plain.no_bar(), plain.no_logging():
        assert learn.validate() == plain.validate()  # nothing mixed in validation
        before = {k: v.clone() for k, v in learn.model.state_dict().items()}
        learn.lr_find(num_it=8, show_plot=False)
        learn.fit(1, lr=1e-3)  # fastai loss wrappers (not nn.Modules) are mixed too
    assert learn.loss_func is loss_func and loss_func.reduction == "mean"
    after_lr_find = learn.model.state_dict()
    assert any(not torch.equal(before[k], after_lr_find[k]) for k in before)  # fit did train
    assert learn.recorder.values[-1][2] > 0.5


def test_batch_size_one_and_cutmix(tmp_path):
    x, y = _digits()
    learn = Learner(_dls(x[:40], y[:40], bs=1, n_train=30), _model(), loss_func=nn.CrossEntropyLoss(),
                    path=tmp_path, cbs=MixUp(0.4))
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
    cap = _Capture()
    learn = Learner(_dls(x, y, n_train=256), _model(), loss_func=nn.CrossEntropyLoss(), path=tmp_path,
                    cbs=[CutMix(1.0, generator=torch.Generator().manual_seed(1)), cap])
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
    target = cap.records[0][2]
    box = target.params.region.box[0]  # (2, 2): rows and columns of the pasted region
    area = ((box[:, 1] - box[:, 0]).prod() / 64).item()
    torch.testing.assert_close(target.lam, torch.full_like(target.lam, 1 - area))


def test_one_hot_targets_are_mixed_not_the_loss(tmp_path):
    x, y = _digits()
    onehot = nn.functional.one_hot(y, 10).float()
    cap = _Capture()
    learn = Learner(_dls(x, onehot, n_train=512), _model(), loss_func=nn.BCEWithLogitsLoss(), path=tmp_path,
                    cbs=[MixUp(0.4, generator=torch.Generator().manual_seed(2)), cap])
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
    _, yb, target, _ = cap.records[0]
    assert target is None  # target mixing: no loss recomputation
    assert yb.dtype == torch.float32
    torch.testing.assert_close(yb.sum(1), torch.ones(len(yb)))
    assert ((yb > 0) & (yb < 1)).any()


def test_any_mixlab_transform_through_mix_callback(tmp_path):
    x, y = _digits()
    cap = _Capture()
    both = mixlab.MixUpOrCutMix(0.4, 1.0, mode="sample", generator=torch.Generator().manual_seed(3))
    learn = Learner(_dls(x, y, n_train=256), _model(), loss_func=nn.CrossEntropyLoss(), path=tmp_path,
                    cbs=[MixCallback(both), cap])
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
    target = cap.records[0][2]
    linear = target.params.region.linear
    assert linear is not None and linear.any() and (~linear).any()
    with pytest.raises(TypeError, match="mixlab transform"):
        MixCallback(nn.Identity())


def test_stop_epoch_ends_mixing(tmp_path):
    x, y = _digits()
    cap = _Capture()
    learn = Learner(_dls(x, y, n_train=256), _model(), loss_func=nn.CrossEntropyLoss(), path=tmp_path,
                    cbs=[MixUp(0.4, stop_epoch=1, generator=torch.Generator().manual_seed(0)), cap])
    with learn.no_bar(), learn.no_logging():
        learn.fit(2)
    per_epoch = len(cap.records) // 2
    mixed = [r[2] is not None for r in cap.records]
    assert all(mixed[:per_epoch]) and not any(mixed[per_epoch:])  # epoch 1: plain cross-entropy
