"""MixStyle against a port of the official ``MixStyle.forward`` (KaiyangZhou/mixstyle-release, ``reid/models/mixstyle.py``,
the same code as Dassl's ``dassl/modeling/ops/mixstyle.py``): the same draws give the same features."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mixlab.mixstyle import MixStyle, add_mixstyle, mixstyle


def official_forward(x, *, training, p, eps, mix, coin, lmda, randperm):
    """The official ``MixStyle.forward``, line for line, with its three random calls given:
    ``coin`` for ``random.random()``, ``lmda`` for ``self.beta.sample((B, 1, 1, 1))``, ``randperm(n)`` for
    ``torch.randperm(n)``."""
    if not training:
        return x
    if coin > p:
        return x
    B = x.size(0)
    mu = x.mean(dim=[2, 3], keepdim=True)
    var = x.var(dim=[2, 3], keepdim=True)
    sig = (var + eps).sqrt()
    mu, sig = mu.detach(), sig.detach()
    x_normed = (x - mu) / sig
    lmda = lmda.to(x.device)
    if mix == "random":
        perm = randperm(B)
    elif mix == "crossdomain":
        perm = torch.arange(B - 1, -1, -1)
        perm_b, perm_a = perm.chunk(2)
        perm_b = perm_b[randperm(B // 2)]
        perm_a = perm_a[randperm(B // 2)]
        perm = torch.cat([perm_b, perm_a], 0)
    else:
        raise NotImplementedError
    mu2, sig2 = mu[perm], sig[perm]
    mu_mix = mu * lmda + mu2 * (1 - lmda)
    sig_mix = sig * lmda + sig2 * (1 - lmda)
    return x_normed * sig_mix + mu_mix


@pytest.mark.parametrize("mix", ["random", "crossdomain"])
@pytest.mark.parametrize("B", [2, 6, 8])
def test_equals_the_official_forward_on_the_same_draws(mix, B):
    x = torch.randn(B, 4, 5, 7, generator=torch.Generator().manual_seed(B)) * 3 + 1
    coins = []
    for seed in range(6):  # p = 0.5: some calls skip, some mix
        ms = MixStyle(p=0.5, alpha=0.1, mix=mix, generator=torch.Generator().manual_seed(seed)).train()
        ours = ms(x)
        draws = MixStyle(p=0.5, alpha=0.1, mix=mix, generator=torch.Generator().manual_seed(seed)).sample(B, x.device)
        perms = list(draws.perms)
        theirs = official_forward(x, training=True, p=0.5, eps=1e-6, mix=mix, coin=draws.coin,
                                  lmda=draws.lam.view(B, 1, 1, 1), randperm=lambda n: perms.pop(0))
        assert not perms or draws.coin > 0.5  # a mixing call used every drawn permutation, in the official order
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
        coins.append(draws.coin)
        if draws.coin < 0.5:
            assert not torch.equal(ours, x)
    assert min(coins) < 0.5 < max(coins)  # both branches were compared


def test_the_crossdomain_partner_comes_from_the_other_half():
    ms = MixStyle(p=1.0, mix="crossdomain", generator=torch.Generator().manual_seed(0))
    for _ in range(20):
        perm = ms.sample(8, "cpu").perm
        assert sorted(perm.tolist()) == list(range(8))
        assert bool((perm[:4] >= 4).all()) and bool((perm[4:] < 4).all())
    odd = ms.sample(7, "cpu").perm  # the official code fails on an odd batch; here the first half has the extra row
    assert sorted(odd.tolist()) == list(range(7)) and bool((odd[:4] >= 3).all()) and bool((odd[4:] < 3).all())


def test_draws_follow_beta_alpha_and_p():
    ms = MixStyle(p=0.3, alpha=0.1, generator=torch.Generator().manual_seed(0))
    draws = [ms.sample(4, "cpu") for _ in range(2000)]
    rate = sum(d.coin < 0.3 for d in draws) / len(draws)
    assert abs(rate - 0.3) < 0.04
    lam = torch.cat([d.lam for d in draws])
    assert bool(((lam >= 0) & (lam <= 1)).all())
    assert float(((lam < 0.05) | (lam > 0.95)).float().mean()) > 0.5  # Beta(0.1, 0.1) is U-shaped


def test_eval_mode_p0_and_inactive_are_the_identity():
    x = torch.randn(4, 3, 6, 6)
    ms = MixStyle(p=1.0)
    assert ms.eval()(x) is x
    assert MixStyle(p=0.0).train()(x) is x
    ms = MixStyle(p=1.0).train()
    ms.active = False
    assert ms(x) is x
    assert not torch.equal(MixStyle(p=1.0, generator=torch.Generator().manual_seed(1)).train()(x), x)


def test_statistics_are_mixed_and_detached_and_gradients_flow():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 3, 8, 8, generator=g) * torch.arange(1, 7.0).view(6, 1, 1, 1)).requires_grad_()
    lam = torch.full((6,), 0.25)
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    out = mixstyle(x, lam, perm)
    mu, sig = x.mean((2, 3)), (x.var((2, 3)) + 1e-6).sqrt()
    torch.testing.assert_close(out.mean((2, 3)), 0.25 * mu + 0.75 * mu[perm], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.std((2, 3)), 0.25 * sig + 0.75 * sig[perm], atol=1e-4, rtol=1e-4)
    out.square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    # the statistics are detached: the gradient is that of x_normed * sig_mix + mu_mix with constant stats
    x2 = x.detach().clone().requires_grad_()
    m, s = x2.mean((2, 3), keepdim=True).detach(), (x2.var((2, 3), keepdim=True) + 1e-6).sqrt().detach()
    l4 = lam.view(6, 1, 1, 1)
    ref = (x2 - m) / s * (s * l4 + s[perm] * (1 - l4)) + (m * l4 + m[perm] * (1 - l4))
    ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_sequences_and_options_are_checked():
    out = MixStyle(p=1.0, generator=torch.Generator().manual_seed(0)).train()(torch.randn(4, 3, 10))
    assert out.shape == (4, 3, 10)
    with pytest.raises(ValueError, match="channels"):
        MixStyle(p=1.0).train()(torch.randn(4, 3))
    with pytest.raises(ValueError, match="mix must be one of"):
        MixStyle(mix="domain")
    with pytest.raises(ValueError, match="alpha"):
        MixStyle(alpha=0)
    with pytest.raises(ValueError, match="p must"):
        MixStyle(p=1.5)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Conv2d(3, 4, 3, padding=1)
        self.layer2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.head(self.layer2(self.layer1(x)))


def test_add_mixstyle_mixes_after_the_named_layers_in_training_only():
    torch.manual_seed(0)
    net, x = _Net(), torch.randn(6, 3, 8, 8)
    plain = net(x)
    keys = set(net.state_dict())
    hooks = add_mixstyle(net, ["layer1", "layer2"], p=1.0, generator=torch.Generator().manual_seed(0))
    assert set(net.state_dict()) == keys  # the model is not edited
    assert [m.p for m in hooks.modules.values()] == [1.0, 1.0] and list(hooks.modules) == ["layer1", "layer2"]
    net.train()
    mixed = net(x)
    assert not torch.allclose(mixed, plain)
    # the same as calling the two MixStyle modules by hand with the same generator
    hooks.remove()
    ms = MixStyle(p=1.0, generator=torch.Generator().manual_seed(0)).train()
    ref = net.head(ms(net.layer2(ms(net.layer1(x)))))
    torch.testing.assert_close(mixed, ref)
    torch.testing.assert_close(net(x), plain)
    add_mixstyle(net, ["layer1"], p=1.0)
    net.eval()
    torch.testing.assert_close(net(x), plain)  # eval: the identity
    mixed.sum().backward()  # gradients flow through the hooks
    assert net.layer1.weight.grad is not None
    with pytest.raises(ValueError, match="no submodule named 'layer9'"):
        add_mixstyle(net, ["layer9"])
