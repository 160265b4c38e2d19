"""airbench's pieces in the lab (issue 21, docs/RESULTS.md section 3) and the ``cifar10-90`` preset built from them.

- ``--ema DECAY``: the average equals a hand-computed one (``average``: every step with TensorFlow's warm-up;
  ``lookahead``: airbench's every-5-steps rule that resets the weights), frozen parameters and integer buffers are
  copied; a run interrupted and resumed ends bit-for-bit like an uninterrupted one, and ends with the average;
- ``--init-batch N``: every arm of a seed whitens from the same N un-augmented, unmixed rows, whatever it mixes;
- ``--eval-every K``: the epochs between are trained alike but record no test metrics (``test_rows`` 0), and the
  summary, the report and the time-to-accuracy reader cope;
- ``--augment translate-flip``: the uint8 gather gives bit-for-bit airbench's ``batch_flip_lr`` / reflect pad /
  ``batch_crop`` / alternating flip on the normalised batch, from the same draws;
- ``--bn-lr-scale`` / ``--no-decay-bias-bn``: the optimiser's groups have the intended lr and weight decay;
- every new option at its default leaves the configuration hash (so old run folders resume) as it was.

All on small synthetic tensors or scikit-learn's digits, one thread.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _runs import cli, interrupted_run, result, strip

pytest.importorskip("sklearn")

from mixlab_lab import train as T  # noqa: E402
from mixlab_lab.config import OMITTED_DEFAULTS, PRESETS, LabConfig, resolve_config  # noqa: E402
from mixlab_lab.models import MODELS, AirbenchCPU, build_model  # noqa: E402
from mixlab_lab.store import config_sha256, load_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# digits, one thread, seed 0, airbench's network at CPU size (8x8 images: its pools are skipped where maps are 1 px)
BASE = ["--dataset", "digits", "--train-size", "600", "--model", "airbench-cpu", "--batch-size", "64", "--threads",
        "1", "--quiet", "--seeds", "0"]


@pytest.fixture
def no_report(monkeypatch):
    """Skip the plots where a case does not concern them (saves ~1 s per run)."""
    from mixlab_lab import report

    monkeypatch.setattr(report, "write_report", lambda *a, **k: None)


def _rows(out: Path) -> list:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- --ema

class _Tiny(torch.nn.Module):
    """A trainable linear layer, a frozen one, and a BatchNorm (float running statistics, an int counter)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.frozen = torch.nn.Linear(4, 4, bias=False)
        self.frozen.weight.requires_grad_(False)
        self.bn = torch.nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.lin(self.frozen(x)))


def _steps(model, n, avg=None, seed=0):
    """``n`` SGD steps on fixed random batches; after each, ``avg.update`` and a snapshot of the state."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=0.5, momentum=0.9)
    snaps = []
    for _ in range(n):
        x = torch.randn(8, 4, generator=g)
        loss = (model(x) - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.frozen.weight.add_(0.01)  # a frozen weight set from outside (as a lazy whitening would)
        if avg is not None:
            avg.update(model)
        snaps.append({k: v.detach().clone().double() for k, v in model.state_dict().items()})
    return snaps


def test_ema_average_equals_a_hand_computed_average():
    torch.manual_seed(0)
    model = _Tiny()
    start = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    avg = T.WeightAverage(model, 0.9, "average", total_steps=6)
    snaps = _steps(model, 6, avg)
    hand = dict(start)
    for t, snap in enumerate(snaps, 1):
        d = min(0.9, (1 + t) / (10 + t))  # TensorFlow's warm-up of the decay
        hand = {k: d * hand[k] + (1 - d) * snap[k] for k in hand}
    for k in ("lin.weight", "lin.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        assert torch.allclose(avg.state[k].double(), hand[k], rtol=0, atol=1e-6), k
        if k != "lin.bias":  # (a bias before BatchNorm gets no gradient)
            assert not torch.allclose(avg.state[k].double(), snaps[-1][k], rtol=0, atol=1e-4), k  # it did average
    # frozen parameters and integer buffers are copied, not averaged
    assert torch.equal(avg.state["frozen.weight"], model.frozen.weight)
    assert avg.state["bn.num_batches_tracked"].item() == 6 and avg.step == 6
    # training is untouched: the same steps without an average give the same weights
    torch.manual_seed(0)
    alone = _Tiny()
    assert all(torch.equal(a, b) for a, b in zip(_steps(alone, 6)[-1].values(), snaps[-1].values()))
    # copy_to / averaged_weights put the average in and (for the latter) the weights back, bit for bit
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with T.averaged_weights(model, avg):
        assert all(torch.equal(model.state_dict()[k], avg.state[k]) for k in before)
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)


def test_lookahead_is_airbenchs_every_fifth_step_rule():
    torch.manual_seed(0)
    model = _Tiny()
    avg = T.WeightAverage(model, 0.95, "lookahead", total_steps=10)
    start = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    # airbench: alpha_schedule = 0.95**5 * (arange(T + 1) / T)**3, an update after steps 5, 10, ...
    assert [avg.decay_at(t) for t in (1, 4, 6)] == [None, None, None]
    assert avg.decay_at(5) == pytest.approx(0.95 ** 5 * 0.5 ** 3) and avg.decay_at(10) == pytest.approx(0.95 ** 5)
    # ... and (the lab's addition) after the run's last step, not a multiple of 5 here
    assert T.WeightAverage(model, 0.95, "lookahead", total_steps=12).decay_at(12) == pytest.approx(0.95 ** 5)
    assert T.WeightAverage(model, 0.95, "lookahead", total_steps=12).decay_at(11) is None
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=0.5, momentum=0.9)
    hand = dict(start)
    for t in range(1, 11):
        loss = (model(torch.randn(8, 4, generator=g)) - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        before = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
        avg.update(model)
        if t % 5:
            assert all(torch.equal(model.state_dict()[k].double(), before[k]) for k in before)  # no update
            continue
        d = 0.95 ** 5 * (t / 10) ** 3
        hand = {k: d * hand[k] + (1 - d) * before[k] if k in avg.averaged else before[k] for k in hand}
        for k in ("lin.weight", "lin.bias", "bn.bias", "bn.running_mean"):
            assert torch.allclose(avg.state[k].double(), hand[k], rtol=0, atol=1e-6), (t, k)
            assert torch.equal(model.state_dict()[k], avg.state[k]), (t, k)  # the weights reset to the average
        hand = {k: v.detach().clone().double() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["average", "lookahead"])
def test_ema_run_resumes_bit_for_bit_and_ends_with_the_average(mode, tmp_path, capsys, no_report):
    args = [*BASE, "--epochs", "3", "--ema", "0.9", "--ema-mode", mode]
    full = tmp_path / "full"
    rc, err = cli(["compare", *args, "--out", full], capsys)
    assert rc == 0, err
    # stopped after the mixup arm's first epoch (3 baseline epochs, then 1): resumed mid-arm, the average with it
    interrupted_run(tmp_path / "resumed", args, after=4)
    ck = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "seed0_mixup.pt")
    assert ck["epoch"] == 1 and ck["ema"]["step"] > 0 and ck["ema"]["mode"] == mode
    assert cli(["compare", "--out", tmp_path / "resumed", "--resume", "--quiet"], capsys)[0] == 0
    assert result(tmp_path / "resumed") == result(full)
    # the arm ends with the average: the final weights' hash is the saved average's, not the training weights'
    ck = load_checkpoint(full / "checkpoints" / "seed0_baseline.pt")
    model = build_model("airbench-cpu", (1, 8, 8), 10)
    model.load_state_dict(ck["ema"]["state"])
    summary = json.loads((full / "summary.json").read_text())
    assert summary["weights_sha256"]["baseline"]["0"] == T.weights_sha256(model)
    if mode == "average":  # the training weights differ from their average
        assert ck["weights_sha256"] != T.weights_sha256(model)


# ---------------------------------------------------------------------------------------------- --init-batch

def _digits():
    from mixlab_lab.runner import load_splits

    cfg = resolve_config({"dataset": "digits", "model": "airbench-cpu"})
    return T.prepare_data(load_splits(cfg, 0), cfg, "cpu")


def test_init_batch_whitens_every_arm_alike_from_unmixed_rows():
    data = _digits()
    filters = {}
    for mix in ("none", "mixup", "cutmix"):
        for init in (None, 300):
            cfg = resolve_config({"dataset": "digits", "model": "airbench-cpu", "init_batch": init, "alpha": 1.0,
                                  "batch_size": 64, "epochs": 1})
            torch.manual_seed(0)
            model = build_model("airbench-cpu", data.input_shape, data.num_classes)
            run = T._setup_arm(cfg, data, model, seed=0, mix=mix, alpha=1.0)
            assert bool(model.whitened) == (init is not None)  # whitened before training, or lazily at the first step
            T._train_steps(run, 0, "", False)
            filters[mix, init] = model.whiten.weight.detach().clone()
    # --init-batch: the same filters in every arm, computed from the seed's 300 un-augmented, unmixed rows
    assert torch.equal(filters["none", 300], filters["mixup", 300]) and torch.equal(filters["none", 300],
                                                                                     filters["cutmix", 300])
    rows = torch.randperm(data.y_train.numel(), generator=torch.Generator().manual_seed(5_000_011))[:300].sort().values
    ref = AirbenchCPU(1, 10, (8, 8), widths=(32, 64, 64))
    ref.init_whitening(T.make_batch(data, rows, train=False)[0])
    assert torch.equal(filters["none", 300], ref.whiten.weight)
    # without it each arm whitens from its own first (mixed) batch
    assert not torch.equal(filters["none", None], filters["mixup", None])


def test_init_batch_run_resumes_when_the_data_based_initialisation_differs_in_its_last_bits(tmp_path, capsys,
                                                                                            no_report):
    """The whitening is a reduction over thousands of rows, so another thread count changes its last bits: a resume on
    another --threads must not be refused as "other initial weights" (the checkpoint holds the initialised weights),
    and ends exactly as the uninterrupted run. Seen on CIFAR-10: a 2-thread run resumed with --threads 1 was refused."""
    args = [*BASE, "--epochs", "2", "--init-batch", "300"]
    full = tmp_path / "full"
    assert cli(["compare", *args, "--out", full], capsys)[0] == 0
    interrupted_run(tmp_path / "resumed", args, after=3)
    real = AirbenchCPU.init_whitening

    def off_by_bits(self, x, *a, **k):  # what a different reduction order gives: the filters 1 ulp away
        real(self, x, *a, **k)
        with torch.no_grad():  # in place: the weight keeps its (channels-last) memory format
            self.whiten.weight.copy_(torch.nextafter(self.whiten.weight, torch.full_like(self.whiten.weight, 1e9)))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AirbenchCPU, "init_whitening", off_by_bits)
        rc, err = cli(["compare", "--out", tmp_path / "resumed", "--resume", "--quiet"], capsys)
    assert rc == 0, err
    assert result(tmp_path / "resumed") == result(full)


def test_init_batch_is_refused_for_a_model_without_a_data_based_initialisation(tmp_path, capsys):
    rc, err = cli(["train", "--dataset", "digits", "--model", "fast-cnn", "--init-batch", "100", "--quiet",
                   "--out", tmp_path / "run"], capsys)
    assert rc == 2 and "--init-batch" in err and "init_from_data" in err, err
    assert not (tmp_path / "run").exists()  # refused before any work


# ---------------------------------------------------------------------------------------------- --eval-every

def test_eval_every_trains_alike_and_records_no_test_metrics_between(tmp_path, capsys):
    every, sparse = tmp_path / "every", tmp_path / "sparse"
    args = ["--dataset", "digits", "--train-size", "600", "--epochs", "3", "--batch-size", "64", "--threads", "1",
            "--quiet", "--seeds", "0"]
    from mixlab_lab import report

    with pytest.MonkeyPatch.context() as mp:  # the plots only for the run under test
        mp.setattr(report, "write_report", lambda *a, **k: None)
        assert cli(["compare", *args, "--out", every], capsys)[0] == 0
    rc, err = cli(["compare", *args, "--eval-every", "2", "--out", sparse], capsys)
    assert rc == 0, err
    rows = _rows(sparse)
    for a, b in zip(_rows(every), rows):
        assert a["train_loss"] == b["train_loss"] and a["epoch"] == b["epoch"]  # evaluation changes no training
        if b["epoch"] == 1:
            assert b["test_rows"] == 0 and not {"test_acc", "test_nll", "test_ece", "ece_bins"} & set(b)
        else:
            assert strip(a) == strip(b)  # epoch 2 (a multiple of 2) and 3 (the last) scored as before
    s_every = json.loads((every / "summary.json").read_text())
    s_sparse = json.loads((sparse / "summary.json").read_text())
    assert s_sparse["weights_sha256"] == s_every["weights_sha256"]
    for arm in ("baseline", "mixup"):  # the best epoch over the evaluated ones
        got = s_sparse["per_seed"][arm]["0"]
        assert got["best_test_acc"] == max(r["test_acc"] for r in rows if r["arm"] == arm and "test_acc" in r)
    assert (sparse / "report.md").is_file() and (sparse / "plots" / "curves.png").is_file()
    assert json.loads((sparse / "config.json").read_text())["config"]["eval_every"] == 2
    # the time-to-accuracy reader: every epoch's time counts, points only where there is an accuracy
    spec = importlib.util.spec_from_file_location("lab_time_to_accuracy",
                                                  REPO / "benchmarks" / "lab_time_to_accuracy.py")
    tta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tta)
    pts = tta.load_run(sparse)["curves"][(0, "baseline")]
    assert [p[3] for p in pts] == [2, 3]
    assert pts[0][0] == pytest.approx(sum(r["train_time_s"] for r in rows if r["arm"] == "baseline" and
                                          r["epoch"] <= 2))


# ---------------------------------------------------------------------------------------------- translate-flip

def _airbench_reference(x, pre_flip, shifts, epoch, pad=2):
    """airbench's CifarLoader (flip, translate=2, altflip) on a normalised batch, with the draws given: its
    batch_flip_lr (the run's flip of each image), reflect padding, batch_crop, and the odd epochs' flip of all."""
    images = torch.where(pre_flip.view(-1, 1, 1, 1), x.flip(-1), x)
    images = F.pad(images, (pad,) * 4, "reflect")
    crop = x.shape[-1]
    r = (images.size(-1) - crop) // 2
    out = torch.empty_like(x)
    for sy in range(-r, r + 1):  # airbench's batch_crop, its shifts given
        for sx in range(-r, r + 1):
            mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            out[mask] = images[mask, :, r + sy:r + sy + crop, r + sx:r + sx + crop]
    if epoch % 2 == 1:
        out = out.flip(-1)
    return out


@pytest.mark.parametrize("epoch", [0, 1, 2, 3])
def test_translate_flip_is_airbenchs_augmentation_bit_for_bit(epoch):
    g = torch.Generator().manual_seed(1)
    n, c, h, w = 96, 3, 12, 12
    data = T.LabData(x_train=torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g),
                     y_train=torch.arange(n) % 10, x_test=torch.zeros(2, c, h, w, dtype=torch.uint8),
                     y_test=torch.zeros(2, dtype=torch.long), mean=torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1),
                     std=torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1), kind="image", num_classes=10,
                     classes=list(range(10)))
    cfg = LabConfig(augment="translate-flip")
    bits = T.alternating_flips(cfg, data, seed=0)
    assert bits.shape == (n,) and 0 < int(bits.sum()) < n
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(2))[:64]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x, y = T.make_batch(data, idx, train=True, augment="translate-flip", generator=g1, epoch=epoch, flip_bits=bits)
    shifts = torch.randint(-2, 3, size=(64, 2), generator=g2)  # airbench's draw in batch_crop
    assert shifts.abs().max() == 2 and len(set(map(tuple, shifts.tolist()))) > 10
    ref = _airbench_reference((data.x_train[idx].float() / 255.0 - data.mean) / data.std, bits[idx], shifts, epoch)
    assert torch.equal(y, data.y_train[idx])
    assert torch.equal(x.contiguous().view(torch.int32), ref.contiguous().view(torch.int32))
    assert torch.equal(g1.get_state(), g2.get_state())  # the same draws: later batches match too


# ---------------------------------------------------------------------------------------------- parameter groups

def test_param_groups_have_the_intended_lr_and_weight_decay():
    torch.manual_seed(0)
    model = build_model("fast-cnn", (1, 8, 8), 10)  # convs without bias, BatchNorm weights and biases, a Linear
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)] + [model.head.weight]
    norms = [q for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for q in m.parameters()]
    by_id = lambda qs: sorted(id(q) for q in qs)  # noqa: E731
    # defaults: one group holding every parameter (the optimiser of every earlier run)
    opt, _ = T._optimizer(resolve_config({"optimizer": "sgd", "weight_decay": 1e-3}), model, 10)
    assert len(opt.param_groups) == 1 and by_id(opt.param_groups[0]["params"]) == by_id(model.parameters())
    cfg = resolve_config({"optimizer": "sgd", "lr": 0.5, "weight_decay": 1e-3, "bn_lr_scale": 64.0})
    opt, sched = T._optimizer(cfg, model, 10)
    groups = {g["name"]: g for g in opt.param_groups}
    assert opt.param_groups[0]["name"] == "other" and set(groups) == {"other", "norm", "bias"}
    assert by_id(groups["other"]["params"]) == by_id(convs)
    assert by_id(groups["norm"]["params"]) == by_id(norms)
    assert by_id(groups["bias"]["params"]) == by_id([model.head.bias])
    assert groups["other"]["initial_lr"] == 0.5 and groups["other"]["weight_decay"] == 1e-3
    assert groups["norm"]["initial_lr"] == 0.5 * 64 and groups["norm"]["weight_decay"] == pytest.approx(1e-3 / 64)
    assert groups["norm"]["initial_lr"] * groups["norm"]["weight_decay"] == pytest.approx(0.5 * 1e-3)  # airbench's
    assert groups["bias"]["initial_lr"] == 0.5 and groups["bias"]["weight_decay"] == 1e-3
    for _ in range(3):
        opt.step()  # (no gradients: no update)
        sched.step()
    assert groups["norm"]["lr"] == pytest.approx(64 * groups["other"]["lr"])  # the schedule scales every group
    cfg = resolve_config({"optimizer": "sgd", "lr": 0.5, "weight_decay": 1e-3, "decay_bias_bn": False})
    groups = {g["name"]: g for g in T._optimizer(cfg, model, 10)[0].param_groups}
    assert groups["other"]["weight_decay"] == 1e-3
    assert groups["norm"]["weight_decay"] == 0 and groups["bias"]["weight_decay"] == 0
    assert groups["norm"]["lr"] == groups["bias"]["lr"] == groups["other"]["lr"]
    # airbench-cpu: its BatchNorm biases (the reparametrised ones) are the normalisation group
    air = build_model("airbench-cpu", (3, 8, 8), 10)
    groups = {g["name"]: g for g in T._optimizer(cfg, air, 10)[0].param_groups}
    assert by_id(groups["norm"]["params"]) == by_id(q for n, q in air.named_parameters() if ".norm" in n)
    assert by_id(groups["bias"]["params"]) == by_id([air.whiten.bias])


# ---------------------------------------------------------------------------------------------- config hash, preset

# config_sha256 of the defaults and of every preset before these options existed (commit d571aa4)
HASHES = {None: "e05d9aad8c2184fe60a1b6cbeae342e65d7f86bb00dd3e3442209ed9c0f210ed",
          "cifar10-bce": "d2b13a18ee686bbfd86975c55b87acfd7aa6419decc90184f04d34c3e1a183c7",
          "cifar10-fast": "56e75168a78e4f374fdc1db5a5e323c017ed9eb4b3c8004f803a9095e90fb2b2",
          "demo": "ae2d2318cf7d01b41aa2d7055d67cd41e42a3e00cb57f0f1df079c2e79bbe093",
          "fastai-mnist-sample": "3c669be5bbbb09976ccaa9d18afffbcc565cf5251eed5896b27283af1f8d988a",
          "fmnist-fast": "38a487c228600d78bec1186adab169d6c1e451cd91f8b528266c0af59e573c48",
          "keras": "24c6a85a6c91a6f59b9c3e23bdd96be0090aec06651fb74efae67e11ea6aabd4"}
NEW = {"ema": 0.95, "ema_mode": "lookahead", "bn_lr_scale": 64.0, "decay_bias_bn": False, "init_batch": 5000,
       "eval_every": 4}


def test_default_configurations_hash_as_before():
    assert config_sha256(LabConfig().validate().to_dict()) == HASHES[None]
    for name, want in HASHES.items():
        if name is not None:
            assert config_sha256(resolve_config({}, preset=name).to_dict()) == want, name
    assert all(OMITTED_DEFAULTS[k] == getattr(LabConfig(), k) for k in NEW)
    assert not set(NEW) & set(LabConfig().to_dict())
    changed = LabConfig(**NEW).validate().to_dict()  # given: recorded (and hashed)
    assert {k: changed[k] for k in NEW} == NEW


@pytest.mark.parametrize("bad, option", [({"ema": 1.0}, "--ema"), ({"ema_mode": "lookahead"}, "--ema-mode"),
                                         ({"bn_lr_scale": 0.0}, "--bn-lr-scale"), ({"init_batch": 0}, "--init-batch"),
                                         ({"eval_every": 0}, "--eval-every"), ({"augment": "translate"}, "--augment")])
def test_new_options_are_checked_naming_the_option(bad, option):
    with pytest.raises(ValueError, match=option):
        resolve_config(bad)


def test_cifar10_90_preset_combines_the_pieces_and_runs(tmp_path, capsys, no_report):
    cfg = resolve_config({}, preset="cifar10-90")
    assert cfg.dataset == "cifar10" and cfg.model in MODELS and cfg.mix == "none"
    assert (cfg.ema, cfg.ema_mode, cfg.augment, cfg.autocast) == (0.95, "lookahead", "translate-flip", "bf16")
    assert cfg.init_batch == 5000 and cfg.eval_every > 1 and cfg.epochs % cfg.eval_every == 0
    model = build_model(cfg.model, (3, 32, 32), 10)
    assert isinstance(model, AirbenchCPU) and model.tta == "flip-translate" and callable(model.init_from_data)
    assert "cifar10-90" in PRESETS
    # the preset's pieces together, on digits: trains, evaluates the average, and with a mixing arm
    rc, err = cli(["compare", "--preset", "cifar10-90", "--dataset", "digits", "--mix", "mixup", "--epochs", "2",
                   "--eval-every", "2", "--init-batch", "500", "--batch-size", "128", "--threads", "1", "--quiet",
                   "--out", tmp_path / "run"], capsys)
    assert rc == 0, err
    rows = _rows(tmp_path / "run")
    assert [("test_acc" in r, r["epoch"]) for r in rows] == [(False, 1), (True, 2)] * 2
    assert all(r["init_time_s"] > 0 for r in rows if r["epoch"] == 1)


@pytest.mark.parametrize("augment", ["crop-flip", "flip", "translate-flip"])
def test_an_image_augmentation_asked_for_on_table_rows_is_refused_not_dropped(augment, tmp_path, capsys):
    rc, err = cli(["train", "--dataset", "wine", "--augment", augment, "--epochs", "1", "--quiet",
                   "--out", tmp_path / "run"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    assert lines[0] == (f"mixlab: --augment {augment} applies to images; the dataset 'wine' has tabular rows: "
                        f"use --augment none (or auto)")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before any training
