"""Lightning callback: mixes training batches after transfer; the module mixes the loss via MixedTarget."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning.pytorch")

import mixlab  # noqa: E402
from mixlab.lightning import CutMix, MixUp  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),  # lightning 2.6 on torch 2.14
    pytest.mark.usefixtures("one_thread"),
]

class _Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        self.criterion = mixlab.losses.MixedLoss(nn.CrossEntropyLoss())
        self.seen = {"train": [], "val": []}
        self.val_acc = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, target = batch
        self.seen["train"].append(type(target).__name__)
        loss = self.criterion(self(x), target)
        self.seen.setdefault("loss", []).append(loss.detach())
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.seen["val"].append(type(y).__name__)
        self.val_acc.append((self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _loaders():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16
    y = torch.tensor(d.target)
    train = DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=64, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    return train, DataLoader(TensorDataset(x[1400:], y[1400:]), batch_size=256)


def _trainer(tmp_path, cb, epochs=2):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, callbacks=[cb],
                     num_sanity_val_steps=1)


@pytest.mark.parametrize("make", [lambda: MixUp(0.4, generator=torch.Generator().manual_seed(0)),
                                  lambda: CutMix(1.0, generator=torch.Generator().manual_seed(0))])
def test_fit_mixes_training_batches_only(tmp_path, make):
    model = _Net()
    train, val = _loaders()
    _trainer(tmp_path, make()).fit(model, train, val)
    assert set(model.seen["train"]) == {"MixedTarget"}
    assert set(model.seen["val"]) == {"Tensor"}  # sanity check and validation are not mixed
    losses = torch.stack(model.seen["loss"])
    assert losses[-5:].mean() < 0.75 * losses[:5].mean()
    assert torch.stack(model.val_acc[-2:]).mean() > 0.7  # chance: 0.1
    assert "on_after_batch_transfer" not in model.__dict__  # the wrapper is gone after fit
    assert list(tmp_path.iterdir()) == []  # no logs or checkpoints written


def test_module_hook_runs_first_and_errors_are_clear(tmp_path):
    class Scaled(_Net):
        def on_after_batch_transfer(self, batch, dataloader_idx):
            x, y = batch
            return x * 0 + 1, y  # all-ones images: mixing them changes nothing

    model = Scaled()
    cb = MixUp(0.4)
    train, val = _loaders()
    _trainer(tmp_path, cb, epochs=1).fit(model, train, val)
    assert set(model.seen["train"]) == {"MixedTarget"}
    with pytest.raises(TypeError, match=r"\(inputs, labels\)"):
        cb.mix_batch({"x": torch.zeros(2, 3)})
    with pytest.raises(TypeError, match="mixlab transform"):
        from mixlab.lightning import MixCallback
        MixCallback(object())


def test_wrapper_is_removed_when_fit_fails(tmp_path):
    class Broken(_Net):
        def training_step(self, batch, batch_idx):
            raise RuntimeError("boom")

    model = Broken()
    train, val = _loaders()
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, MixUp(0.4), epochs=1).fit(model, train, val)
    assert "on_after_batch_transfer" not in model.__dict__


def test_stop_epoch_and_alpha_schedule(tmp_path):
    class Lams(_Net):
        def training_step(self, batch, batch_idx):
            self.seen.setdefault("lam", []).append((self.current_epoch, batch[1].lam.detach()))
            return super().training_step(batch, batch_idx)

    model = Lams()
    train, val = _loaders()
    seen_alpha = []
    cb = MixUp(0.4, mode="sample", stop_epoch=2, alpha_schedule=lambda e: seen_alpha.append(e) or 0.4 / (e + 1),
               generator=torch.Generator().manual_seed(0))
    _trainer(tmp_path, cb, epochs=3).fit(model, train, val)
    lams = {e: torch.cat([lam for ep, lam in model.seen["lam"] if ep == e]) for e in range(3)}
    assert not bool((lams[0] == 1).all()) and not bool((lams[1] == 1).all())
    assert bool((lams[2] == 1).all())  # off from stop_epoch on; batches still carry a MixedTarget
    assert cb.mixer.alpha == pytest.approx(0.4 / 3) and 1 in seen_alpha
    with pytest.raises(ValueError, match="has no single alpha"):
        from mixlab.lightning import MixCallback
        MixCallback(mixlab.MixUpOrCutMix(), alpha_schedule=lambda e: 0.2)
