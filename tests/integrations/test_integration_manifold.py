"""ManifoldMixup: hidden-state mixing through hooks, layer choice, padding-mask combination."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import mixlab
from mixlab.manifold import ManifoldMixup, combine_masks
from mixlab.params import MixParams




pytestmark = pytest.mark.usefixtures("one_thread")

def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


def test_hidden_state_is_mixed_exactly_and_hooks_are_removed():
    net = _cnn()
    x = torch.randn(5, 1, 8, 8)
    params = MixParams(torch.tensor([0.3, 0.9, 1.0, 0.5, 0.7]), torch.tensor([1, 0, 2, 4, 3]))
    mm = ManifoldMixup(net, layers=["1"])
    out = mm.forward_with(params, net[1], x)
    h = net[1](net[0](x))  # (B, 4, 8, 8)
    lam = params.lam.view(-1, 1, 1, 1)
    h = lam * h + (1 - lam) * h[params.index]
    expected = net[4](net[3](net[2](h)))
    torch.testing.assert_close(out, expected)
    assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0 for m in net.modules())
    out.sum().backward()  # differentiable through the mixed hidden state
    assert net[0].weight.grad is not None


def test_every_layer_is_chosen_and_target_uses_the_same_params():
    net = _cnn()
    mm = ManifoldMixup(net, layers=["input", net[0], "2"], alpha=1.0, generator=torch.Generator().manual_seed(3))
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 3
    chosen = set()
    for _ in range(30):
        out, target = mm(x, y)
        chosen.add("input" if mm.last_layer == "input" else id(mm.last_layer))
        assert out.shape == (8, 3) and isinstance(target, mixlab.MixedTarget)
        soft = target.soft(3)
        torch.testing.assert_close(soft.sum(1), torch.ones(8))
    assert chosen == {"input", id(net[0]), id(net[2])}


def test_seeded_runs_repeat():
    net = _cnn()
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6) % 3
    runs = []
    for _ in range(2):
        mm = ManifoldMixup(net, layers=["0", "2"], generator=torch.Generator().manual_seed(7))
        runs.append([mm(x, y)[0] for _ in range(3)])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mask, convention, expected", [
    (torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.bool), "padding", [[0, 0, 0, 1], [0, 0, 0, 1]]),
    (torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool), "valid", [[1, 1, 1, 0], [1, 1, 1, 0]]),
    (torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]), "valid", [[1, 1, 1, 0], [1, 1, 1, 0]]),
    (torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]]), "padding", [[0, 0, 0, 1], [0, 0, 0, 1]]),
])
def test_combine_masks_is_the_union_of_real_tokens(mask, convention, expected):
    out = combine_masks(mask, torch.tensor([1, 0]), convention)
    assert out.dtype == mask.dtype and out.long().tolist() == expected


def test_combine_masks_additive_float():
    inf = float("-inf")
    m = torch.tensor([[0.0, 0.0, inf, inf], [0.0, 0.0, 0.0, inf]])
    out = combine_masks(m, torch.tensor([1, 0]))
    assert out.tolist() == [[0.0, 0.0, 0.0, inf], [0.0, 0.0, 0.0, inf]]


class _Block(nn.Module):
    def __init__(self, log, name):
        super().__init__()
        self.lin, self.log, self.name = nn.Linear(4, 4), log, name

    def forward(self, h, mask=None):
        self.log.append((self.name, mask.clone()))
        return h + self.lin(h) * (~mask).unsqueeze(-1)


class _Pool(nn.Module):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def forward(self, h, mask=None):
        self.log.append(("pool", mask.clone()))
        keep = (~mask).float().unsqueeze(-1)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)


class _TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.log = []
        self.emb = nn.Embedding(10, 4, padding_idx=0)
        self.b1, self.b2, self.pool = _Block(self.log, "b1"), _Block(self.log, "b2"), _Pool(self.log)
        self.fc = nn.Linear(4, 2)

    def forward(self, ids, mask=None):
        h = self.emb(ids)
        h = self.b2(self.b1(h, mask=mask), mask=mask)
        return self.fc(self.pool(h, mask=mask))


def test_padding_mask_switches_to_the_union_after_the_mixing_point():
    model = _TokenModel()
    pad = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    ids = torch.randint(1, 10, (3, 4)).masked_fill(pad, 0)
    params = MixParams(torch.full((3,), 0.6), torch.tensor([2, 0, 1]))
    mm = ManifoldMixup(model, layers=["b1"], mask_kwarg="mask", mask_convention="padding")
    mm.forward_with(params, model.b1, ids, mask=pad)
    masks = dict(model.log)
    union = pad & pad[params.index]
    assert torch.equal(masks["b1"], pad)  # before (and at) the mixing point: the original mask
    assert torch.equal(masks["b2"], union) and torch.equal(masks["pool"], union)
    model.log.clear()
    mm.forward_with(params, model.emb, ids, mask=pad)  # mixing the embeddings: every block sees the union
    assert all(torch.equal(m, union) for _, m in model.log)


def test_transformer_encoder_layers_get_the_combined_additive_mask():
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2,
                                enable_nested_tensor=False)
    seen = []
    layer1_forward = enc.layers[1].forward

    def record(*args, **kwargs):
        seen.append(kwargs["src_key_padding_mask"])
        return layer1_forward(*args, **kwargs)

    enc.layers[1].forward = record
    pad = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    params = MixParams(torch.full((2,), 0.7), torch.tensor([1, 0]))
    mm = ManifoldMixup(enc, layers=["layers.0"], mask_kwarg="src_key_padding_mask")
    out = mm.forward_with(params, enc.layers[0], torch.randn(2, 5, 8), src_key_padding_mask=pad)
    assert torch.isfinite(out).all()
    assert torch.equal(torch.isinf(seen[0]), pad & pad[params.index])


def test_errors_name_the_problem():
    net = _cnn()
    with pytest.raises(ValueError, match="no submodule named 'nope'"):
        ManifoldMixup(net, layers=["nope"])
    with pytest.raises(ValueError, match="non-empty list"):
        ManifoldMixup(net, layers=[])
    with pytest.raises(ValueError, match="not a submodule"):
        ManifoldMixup(net, layers=[nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="mask_convention"):
        ManifoldMixup(net, layers=["0"], mask_convention="pad")
    model = _TokenModel()
    mm = ManifoldMixup(model, layers=["input"])
    with pytest.raises(ValueError, match="token ids cannot be mixed"):
        mm(torch.randint(1, 10, (3, 4)), torch.arange(3) % 2, mask=torch.zeros(3, 4, dtype=torch.bool))


def test_layer_that_does_not_run_raises():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.used(x)

    model = Skip()
    mm = ManifoldMixup(model, layers=["unused"])
    with pytest.raises(RuntimeError, match="did not run"):
        mm(torch.randn(3, 4), torch.arange(3) % 2)
    assert not model.unused._forward_hooks  # removed even on failure


def test_manifold_mixup_trains_on_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 64, 10))
    mm = ManifoldMixup(net, layers=["input", "1", "3"], alpha=2.0, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    train, test = slice(0, 1400), slice(1400, None)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for idx in torch.randperm(1400, generator=g).split(64):
            logits, target = mm(x[train][idx], y[train][idx])
            loss = target.loss(crit, logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc > 0.8, acc
