"""Hugging Face Trainer: a tiny ViT built from a config (no download) trains with mixing; evaluation is unmixed."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import mixlab  # noqa: E402
from mixlab.transformers import MixedLabels, MixedLabelsError, mixup_for_trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class _Digits(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": int(self.y[i])}


def _data():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None].repeat_interleave(2, 2).repeat_interleave(2, 3) / 16
    y = torch.tensor(d.target)
    return _Digits(x[:1200], y[:1200]), _Digits(x[1200:1500], y[1200:1500])


def _vit():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, num_labels=10)
    return transformers.ViTForImageClassification(cfg)


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=32, max_steps=200, learning_rate=5e-3,
                logging_steps=10, report_to=[], save_strategy="no", use_cpu=True, seed=0, dataloader_num_workers=0,
                disable_tqdm=True)
    return transformers.TrainingArguments(**{**base, **kw})


def test_trainer_trains_with_mixup_and_evaluates_unmixed(tmp_path):
    train, val = _data()
    model = _vit()
    mixer = mixlab.MixUpOrCutMix(mixup_alpha=0.8, cutmix_alpha=1.0, mode="sample",
                                 generator=torch.Generator().manual_seed(0))
    collator, loss_func = mixup_for_trainer(mixer, num_classes=10)  # the signature: no model
    seen = {"mixed": 0, "plain": 0}

    def counting(outputs, labels, num_items_in_batch=None):
        seen["mixed" if isinstance(labels, MixedLabels) else "plain"] += 1
        return loss_func(outputs, labels, num_items_in_batch)

    trainer = transformers.Trainer(model=model, args=_args(tmp_path, max_steps=400), train_dataset=train,
                                   eval_dataset=val, data_collator=collator, compute_loss_func=counting)
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0] - 0.3, losses  # 400 mixed steps (200 gave 0.15-0.45 below the start over seeds 0-3)
    metrics = trainer.evaluate()
    assert seen["mixed"] == 400 and seen["plain"] > 0  # every training step mixed; evaluation not
    assert metrics["eval_loss"] < 2.0 and result.training_loss > 0
    model.eval()
    with torch.no_grad():
        x = torch.stack([val[i]["pixel_values"] for i in range(300)])
        acc = (model(pixel_values=x).logits.argmax(1) == val.y).float().mean()
    assert acc > 0.3  # chance: 0.1 (a tiny ViT after 400 mixed steps)


def test_the_collator_mixes_inputs_and_carries_mixed_labels():
    train, _ = _data()
    features = [train[i] for i in range(16)]
    plain = transformers.default_data_collator(features)
    mixer = mixlab.MixUp(1.0, mode="sample", generator=torch.Generator().manual_seed(0))
    collator, loss_func = mixup_for_trainer(mixer, num_classes=10)
    batch = collator(features)
    assert batch["pixel_values"].shape == plain["pixel_values"].shape
    assert not torch.equal(batch["pixel_values"], plain["pixel_values"])  # the inputs were mixed
    target = batch["labels"].target
    assert isinstance(batch["labels"], MixedLabels) and torch.equal(target.y, plain["labels"])
    soft = target.soft()
    idx = target.params.index
    other = target.y != target.y[idx]  # partner of another class
    assert other.sum() > 8 and ((soft[other] > 0).sum(1) == 2).all()  # the labels are mixed as the inputs are
    lam = target.params.lam.view(-1, 1, 1, 1)
    expected = lam * plain["pixel_values"] + (1 - lam) * plain["pixel_values"][idx]
    torch.testing.assert_close(batch["pixel_values"], expected)
    logits = torch.randn(16, 10)
    out = transformers.modeling_outputs.ImageClassifierOutput(logits=logits)
    torch.testing.assert_close(loss_func(out, batch["labels"]), target.loss(torch.nn.functional.cross_entropy, logits))
    plain_loss = torch.nn.functional.cross_entropy(logits, plain["labels"])
    torch.testing.assert_close(loss_func(out, plain["labels"]), plain_loss)
    # mixer.enabled = False: the collator passes batches through
    collator.mixer.enabled = False
    assert torch.equal(collator(features)["pixel_values"], plain["pixel_values"])


def test_forgetting_compute_loss_func_is_an_error_not_a_silent_wrong_loss(tmp_path):
    train, _ = _data()
    model = _vit()
    collator, _ = mixup_for_trainer(mixlab.MixUp(0.4), num_classes=10)
    model.train()
    batch = collator([train[i] for i in range(8)])
    with pytest.raises(AttributeError, match="pass compute_loss_func=loss_func"):
        model(**batch)  # the model's own loss would take soft labels as multi-label BCE
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, max_steps=2), train_dataset=train,
                                   data_collator=collator)
    with pytest.raises(MixedLabelsError, match="pass compute_loss_func=loss_func"):
        trainer.train()
    with pytest.raises(ValueError, match="integer class ids"):
        collator([{"pixel_values": torch.zeros(1, 16, 16), "labels": [0.5, 0.5]}])


def test_the_model_argument_of_0_1_still_works():
    train, _ = _data()
    model = _vit()
    collator, loss_func = mixup_for_trainer(mixlab.MixUp(0.4), model, num_classes=10)
    assert isinstance(collator([train[i] for i in range(4)])["labels"], MixedLabels)
    model.train()
    assert model(pixel_values=torch.zeros(2, 1, 16, 16)).logits.shape == (2, 10)  # no hook left on the model
    with pytest.raises(TypeError, match="torch model"):
        mixup_for_trainer(mixlab.MixUp(0.4), "vit", num_classes=10)


def _one_sgd_step(tmp_path, mixer, *, batch, accumulate, lr=0.5):
    """One optimizer step (SGD, constant lr, no clipping) over 8 digits; the update and the collated batches."""
    train, _ = _data()
    eight = _Digits(train.x[:8], train.y[:8])
    model = _vit()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    collator, loss_func = mixup_for_trainer(mixer, num_classes=10)
    batches = []

    def capturing(features):
        out = collator(features)
        batches.append((out["pixel_values"].clone(), out["labels"]))
        return out

    args = _args(tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulate, max_steps=1,
                 lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, logging_steps=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=eight, data_collator=capturing,
                                   compute_loss_func=loss_func, optimizers=(optimizer, None))
    trainer.train()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert sum(len(labels) for _, labels in batches) == 8
    return after - before, batches


def _expected_step(batches, lr=0.5):
    """-lr * the gradient of the mean, over all 8 rows, of each micro-batch's own mixed (or plain) loss."""
    model = _vit()
    model.train()
    total = 0.0
    for x, labels in batches:
        logits = model(pixel_values=x).logits
        if isinstance(labels, MixedLabels):
            total = total + labels.target.loss(torch.nn.functional.cross_entropy, logits, reduction="sum")
        else:
            total = total + torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    (total / 8).backward()
    return torch.cat([-lr * p.grad.flatten() for p in model.parameters()])


def test_gradient_accumulation_gives_the_update_of_the_whole_batch(tmp_path):
    steps = {}
    for batch, accumulate in ((8, 1), (4, 2)):
        mixer = mixlab.MixUp(1.0, mode="sample", generator=torch.Generator().manual_seed(0))
        update, batches = _one_sgd_step(tmp_path, mixer, batch=batch, accumulate=accumulate)
        assert len(batches) == accumulate and all(isinstance(b[1], MixedLabels) for b in batches)
        torch.testing.assert_close(update, _expected_step(batches), rtol=1e-4, atol=1e-6)
        off = mixlab.MixUp(1.0)
        off.enabled = False  # the same rows unmixed: 2 x 4 must equal 8 x 1 exactly as the plain Trainer does
        steps[batch], _ = _one_sgd_step(tmp_path, off, batch=batch, accumulate=accumulate)
    torch.testing.assert_close(steps[4], steps[8], rtol=1e-4, atol=1e-6)



def test_the_trainers_label_smoothing_factor_is_refused_not_ignored(tmp_path):
    train, _ = _data()
    collator, loss_func = mixup_for_trainer(mixlab.MixUp(0.4), num_classes=10)
    trainer = transformers.Trainer(model=_vit(), args=_args(tmp_path, max_steps=1, label_smoothing_factor=0.1),
                                   train_dataset=train, data_collator=collator, compute_loss_func=loss_func)
    with pytest.raises(ValueError, match=r"label_smoothing_factor=0\.1.*mixup_for_trainer\(\.\.\., label_smoothing"):
        trainer.train()
    # the same smoothing given to mixup_for_trainer too: applied once, so accepted
    collator, loss_func = mixup_for_trainer(mixlab.MixUp(0.4), num_classes=10, label_smoothing=0.1)
    trainer = transformers.Trainer(model=_vit(), args=_args(tmp_path, max_steps=1, label_smoothing_factor=0.1),
                                   train_dataset=train, data_collator=collator, compute_loss_func=loss_func)
    assert trainer.train().training_loss > 0
