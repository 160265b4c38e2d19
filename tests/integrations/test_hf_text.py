"""Hugging Face Trainer, text: tiny BERT / GPT-2 / Llama classifiers (built from configs, no download) mix their
input embeddings (or a hidden layer) with the attention masks combined; labels travel as MixedLabels."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import mixlab  # noqa: E402
from mixlab.transformers import MixedLabels, mixup_text_for_trainer  # noqa: E402
from mixlab.transformers_text import PARAMS_KEY  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

T, PAD, C = 12, 0, 3


class _Text(torch.utils.data.Dataset):
    """Random token rows of lengths 3..T, right-padded with PAD; the label is the first token mod 3."""

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.lengths = torch.randint(3, T + 1, (n,), generator=g)
        self.ids = torch.randint(1, 100, (n, T), generator=g)
        self.mask = (torch.arange(T) < self.lengths[:, None]).long()
        self.ids = self.ids * self.mask + PAD * (1 - self.mask)
        self.y = self.ids[:, 0] % C

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": int(self.y[i])}


def _model(name):
    torch.manual_seed(0)
    if name == "bert":
        cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, num_labels=C, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0, pad_token_id=PAD)
        return transformers.BertForSequenceClassification(cfg)
    if name == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32, num_labels=C,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=PAD)
        return transformers.GPT2ForSequenceClassification(cfg)
    cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                   num_labels=C, pad_token_id=PAD)
    return transformers.LlamaForSequenceClassification(cfg)


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=3, learning_rate=1e-3,
                logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, seed=0, dataloader_num_workers=0,
                disable_tqdm=True)
    return transformers.TrainingArguments(**{**base, **kw})


def _mixer(**kw):
    return mixlab.MixUp(1.0, mode="sample", generator=torch.Generator().manual_seed(0), **kw)


def _batch(n=8, seed=0):
    data = _Text(n, seed)
    return transformers.default_data_collator([data[i] for i in range(n)])


def _forward(model, batch):
    return model(**{k: v for k, v in batch.items() if k != "labels"})


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_trainer_trains_three_mixed_steps_and_evaluates_unmixed(tmp_path, name):
    model = _model(name)
    collator, loss_func = mixup_text_for_trainer(_mixer(), model, num_classes=C)
    seen = {"mixed": 0, "plain": 0}

    def counting(outputs, labels, num_items_in_batch=None):
        seen["mixed" if isinstance(labels, MixedLabels) else "plain"] += 1
        return loss_func(outputs, labels, num_items_in_batch)

    trainer = transformers.Trainer(model=model, args=_args(tmp_path), train_dataset=_Text(64),
                                   eval_dataset=_Text(16, seed=1), data_collator=collator, compute_loss_func=counting)
    result = trainer.train()
    assert seen == {"mixed": 3, "plain": 0}
    assert torch.isfinite(torch.tensor(result.training_loss)) and result.training_loss > 0
    metrics = trainer.evaluate()
    assert seen["plain"] > 0 and metrics["eval_loss"] > 0


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_the_hook_mixes_the_input_embeddings_as_computed_by_hand(name):
    model = _model(name)
    collator, _ = mixup_text_for_trainer(_mixer(), model, num_classes=C)
    plain = _batch()
    batch = collator.mix(dict(plain))
    params = batch[PARAMS_KEY].params
    seen = {}
    emb = model.get_input_embeddings()
    handle = emb.register_forward_hook(lambda m, i, out: seen.setdefault("mixed", out.detach().clone()))
    try:
        _forward(model, batch)
    finally:
        handle.remove()
    e = emb.weight.detach()[plain["input_ids"]]  # (B, T, D): the rows' own token embeddings, padding included
    lam = params.lam.view(-1, 1, 1)
    torch.testing.assert_close(seen["mixed"], lam * e + (1 - lam) * e[params.index])
    assert (params.lam < 1).all() and not torch.equal(params.index, torch.arange(8))


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_the_model_receives_the_combined_mask_and_decoders_pool_the_end_of_the_mixed_rows(name):
    model = _model(name)
    collator, _ = mixup_text_for_trainer(_mixer(p=0.5), model, num_classes=C)
    plain = _batch(16)
    batch = collator.mix(dict(plain))
    params = batch[PARAMS_KEY].params
    mixed = params.lam < 1
    assert 0 < mixed.sum() < 16  # p=0.5: some rows are left as they are
    seen = {}

    def capture(module, args, kwargs):
        seen.update(kwargs)

    handle = model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        _forward(model, batch)
    finally:
        handle.remove()
    assert PARAMS_KEY not in seen  # the route's own key never reaches the model's forward
    m = plain["attention_mask"]
    union = torch.where(mixed[:, None], m | m[params.index], m)
    assert torch.equal(seen["attention_mask"], union)
    # the ids the model reads are non-pad exactly where the combined mask is 1 (last-token pooling finds the end)
    assert torch.equal((seen["input_ids"] != PAD).long(), union)
    lengths = m.sum(1)
    end = torch.where(mixed, torch.maximum(lengths, lengths[params.index]), lengths) - 1
    last = (torch.arange(T) * (seen["input_ids"] != PAD)).argmax(-1)  # what GPT-2 / Llama pool
    assert torch.equal(last, end)


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_lam_one_everywhere_gives_the_plain_loss(name):
    model = _model(name)
    collator, loss_func = mixup_text_for_trainer(mixlab.MixUp(1.0, p=0.0), model, num_classes=C)
    plain = _batch()
    batch = collator.mix(dict(plain))
    assert isinstance(batch["labels"], MixedLabels) and (batch[PARAMS_KEY].params.lam == 1).all()
    mixed_loss = loss_func(_forward(model, batch), batch["labels"])
    plain_loss = F.cross_entropy(_forward(model, plain).logits, plain["labels"])
    torch.testing.assert_close(mixed_loss, plain_loss)


def test_a_hidden_layer_is_mixed_with_the_same_params():
    model = _model("bert")
    layer = model.bert.encoder.layer[0]
    collator, _ = mixup_text_for_trainer(_mixer(), model, num_classes=C, layer="bert.encoder.layer.0")
    batch = collator.mix(_batch())
    params = batch[PARAMS_KEY].params
    seen = {}
    first = layer.register_forward_hook(lambda m, i, out: seen.setdefault("before", _first(out).clone()),
                                        prepend=True)
    after = layer.register_forward_hook(lambda m, i, out: seen.setdefault("after", _first(out).clone()))
    emb = model.get_input_embeddings().register_forward_hook(lambda m, i, out: seen.setdefault("emb", out.clone()))
    try:
        _forward(model, batch)
    finally:
        for h in (first, after, emb):
            h.remove()
    h, lam = seen["before"], params.lam.view(-1, 1, 1)
    torch.testing.assert_close(seen["after"], lam * h + (1 - lam) * h[params.index])
    plain_ids = _batch()["input_ids"]
    torch.testing.assert_close(seen["emb"], model.get_input_embeddings().weight[plain_ids])  # embeddings not mixed


def _first(out):
    return (out[0] if isinstance(out, (tuple, list)) else out).detach()


def _one_sgd_step(tmp_path, *, batch, accumulate, enabled=True, lr=0.5):
    model = _model("bert")
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    mixer = _mixer()
    mixer.enabled = enabled
    collator, loss_func = mixup_text_for_trainer(mixer, model, num_classes=C)
    batches = []

    def capturing(features):
        out = collator(features)
        batches.append(dict(out))
        return out

    args = _args(tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulate, max_steps=1,
                 lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Text(8), data_collator=capturing,
                                   compute_loss_func=loss_func, optimizers=(optimizer, None))
    trainer.train()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert sum(len(b["labels"]) for b in batches) == 8
    return after - before, batches


def _expected_step(batches, lr=0.5):
    """-lr * the gradient of the mean over all 8 rows of each micro-batch's own mixed loss (replayed)."""
    model = _model("bert")
    mixup_text_for_trainer(_mixer(), model, num_classes=C)  # the hooks, to replay the recorded params
    model.train()
    total = 0.0
    for b in batches:
        logits = _forward(model, b).logits
        total = total + b["labels"].target.loss(F.cross_entropy, logits, reduction="sum")
    (total / 8).backward()
    return torch.cat([-lr * p.grad.flatten() for p in model.parameters()])


def test_gradient_accumulation_gives_the_update_of_the_whole_batch(tmp_path):
    steps = {}
    for batch, accumulate in ((8, 1), (4, 2)):
        update, batches = _one_sgd_step(tmp_path, batch=batch, accumulate=accumulate)
        assert len(batches) == accumulate and all(isinstance(b["labels"], MixedLabels) for b in batches)
        torch.testing.assert_close(update, _expected_step(batches), rtol=1e-4, atol=1e-6)
        steps[batch], _ = _one_sgd_step(tmp_path, batch=batch, accumulate=accumulate, enabled=False)
    torch.testing.assert_close(steps[4], steps[8], rtol=1e-4, atol=1e-6)  # unmixed: 2 x 4 is 8 x 1


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_bad_input_is_one_clear_line():
    model = _model("bert")
    collator, _ = mixup_text_for_trainer(_mixer(), model, num_classes=C)
    plain = _batch()
    no_mask = {k: v for k, v in plain.items() if k != "attention_mask"}
    with pytest.raises(ValueError, match="attention_mask") as e:
        collator.mix(no_mask)
    _one_line(e)
    with pytest.raises(ValueError, match="labels") as e:
        collator.mix({k: v for k, v in plain.items() if k != "labels"})
    _one_line(e)
    with pytest.raises(ValueError, match="input_ids") as e:
        collator.mix({"attention_mask": plain["attention_mask"], "labels": plain["labels"]})
    _one_line(e)
    with pytest.raises(TypeError, match="get_input_embeddings") as e:
        mixup_text_for_trainer(_mixer(), torch.nn.Linear(4, 3), num_classes=C)
    _one_line(e)
    with pytest.raises(ValueError, match="no submodule") as e:
        mixup_text_for_trainer(_mixer(), model, num_classes=C, layer="bert.nope")
    _one_line(e)
    cut = mixlab.CutMix(1.0)
    with pytest.raises(ValueError, match="MixUp") as e:
        mixup_text_for_trainer(cut, _model("bert"), num_classes=C)[0].mix(dict(plain))
    _one_line(e)
    checkpointed = _model("bert")
    (getattr(checkpointed, "activation_checkpointing_enable", None) or checkpointed.gradient_checkpointing_enable)()
    checkpointed.train()
    mixed_layer, _ = mixup_text_for_trainer(_mixer(), checkpointed, num_classes=C, layer="bert.encoder.layer.1")
    with pytest.raises(ValueError, match="checkpointing") as e:
        _forward(checkpointed, mixed_layer.mix(dict(plain)))
    _one_line(e)
    with pytest.raises(ValueError, match="integer class ids"):
        collator([{"input_ids": torch.ones(4, dtype=torch.long), "attention_mask": torch.ones(4, dtype=torch.long),
                   "labels": [0.5, 0.5]}])


def test_forgetting_compute_loss_func_is_an_error(tmp_path):
    model = _model("bert")
    collator, _ = mixup_text_for_trainer(_mixer(), model, num_classes=C)
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, max_steps=1), train_dataset=_Text(16),
                                   data_collator=collator)
    with pytest.raises(AttributeError, match="pass compute_loss_func=loss_func"):
        trainer.train()


def test_left_padding_k_way_and_a_padding_collate():
    model = _model("gpt2")
    plain = _batch()
    left = {k: v.flip(1) if k != "labels" else v for k, v in plain.items()}  # the same rows, left-padded
    collator, loss_func = mixup_text_for_trainer(mixlab.MixUp(1.0, k=3), model, num_classes=C)
    batch = collator.mix(dict(left))
    weights, index = batch[PARAMS_KEY].params.weights, batch[PARAMS_KEY].params.index  # (B, 3), (B, 3)
    m = left["attention_mask"]
    union = m | m[index[:, 1]] | m[index[:, 2]]
    assert torch.equal(batch["attention_mask"], union) and torch.equal((batch["input_ids"] != PAD).long(), union)
    assert (union[:, -1] == 1).all()  # left padding: the last position, which decoders pool, is the end of every row
    assert torch.isfinite(loss_func(_forward(model, batch), batch["labels"]))
    assert weights.shape == (8, 3)

    def pad(features):  # what DataCollatorWithPadding does, without a tokenizer
        n = max(len(f["input_ids"]) for f in features)
        ids = torch.tensor([f["input_ids"] + [PAD] * (n - len(f["input_ids"])) for f in features])
        return {"input_ids": ids, "attention_mask": (ids != PAD).long(),
                "labels": torch.tensor([f["labels"] for f in features])}

    collator, _ = mixup_text_for_trainer(_mixer(), model, num_classes=C, collate=pad)
    out = collator([{"input_ids": [5, 6, 7], "labels": 0}, {"input_ids": [8, 9], "labels": 1}])
    assert isinstance(out["labels"], MixedLabels) and out["input_ids"].shape == (2, 3)
