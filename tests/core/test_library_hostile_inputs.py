"""Hostile inputs to the library: each gets one clear line naming the argument, never a stray
IndexError, an overflow from inside torch, a NaN ``lam`` or a silently short per-box key.

1. ``alpha`` too large to draw (1e39 overflowed float32 inside the Beta draw): refused naming alpha.
2. Remix: ``ignore_index`` labels (-100) and labels shorter than the inputs: refused naming ``y``.
3. Inputs with a zero-size dimension after the batch: refused by every registered method, naming
   the method and the shape (SmoothMix and TokenMix returned NaN ``lam``).
4. Detection MixUp and Mosaic: a per-box key with one row per box in some targets and not in
   others is refused naming the key and the target (it was left shorter than the boxes).
5. ``Remix(balanced=True)`` draws partners from one ``(B,)`` weight vector (no ``(B, B)`` matrix).
6. A meta-device generator, timm ``Mixup`` labels outside ``[0, num_classes)``, negative partner
   indices: refused naming the argument.
"""
from __future__ import annotations

import math

import pytest
import torch
from _registry_cases import small_options

import mixlab
from mixlab import MixParams, detection, methods
from mixlab.methods.remix import balanced_partners
from mixlab.sampling import sample_beta, sample_dirichlet


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


# -- 1. alpha ------------------------------------------------------------------------------------

def test_alpha_bound_is_documented_and_a_bound_alpha_draws_near_one_half():
    assert mixlab._validate.MAX_ALPHA == 1e6
    lam = sample_beta(20000, 1e6, generator=torch.Generator().manual_seed(0)).double()
    sd = 1 / (2 * math.sqrt(2e6 + 1))  # Beta(a, a)'s standard deviation
    assert torch.isfinite(lam).all()
    assert abs(lam.mean().item() - 0.5) < 5 * sd / math.sqrt(lam.numel())
    assert 0.95 < lam.std().item() / sd < 1.05
    assert mixlab.MixUp(alpha=1e6).alpha == 1e6


@pytest.mark.parametrize("call", [
    lambda: sample_beta(4, 1e39),
    lambda: sample_beta(4, 1.0, beta=1e39),
    lambda: sample_dirichlet(2, 3, 1e39),
    lambda: mixlab.sample_params(4, alpha=1e39),
    lambda: mixlab.MixUp(alpha=1e39),
    lambda: detection.MixUp(alpha=1e39),
    lambda: mixlab.timm.Mixup(mixup_alpha=1e39),
], ids=["sample_beta", "sample_beta-beta", "sample_dirichlet", "sample_params", "MixUp", "detection.MixUp",
        "timm.Mixup"])
def test_huge_alpha_is_refused_naming_it(call):
    with pytest.raises(ValueError, match=r"(alpha|beta) must be at most 1e\+06.*got 1e\+39") as err:
        call()
    _one_line(err)


@pytest.mark.parametrize("name", [n for n in methods.available() if methods.get(n).alpha])
def test_every_method_with_an_alpha_refuses_a_huge_one(name):
    with pytest.raises(ValueError, match=r"alpha must be at most 1e\+06") as err:
        _build(name, alpha=1e39)
    _one_line(err)


def test_alpha_set_after_construction_is_refused_at_the_call():
    mixer = mixlab.MixUp()
    mixer.alpha = 1e39
    with pytest.raises(ValueError, match=r"alpha must be at most 1e\+06"):
        mixer(torch.rand(4, 3, 8, 8), torch.arange(4))


# -- 2. Remix labels ----------------------------------------------------------------------------

COUNTS = [5.0, 3.0, 2.0, 1.0]


@pytest.mark.parametrize("balanced", [False, True])
def test_remix_refuses_ignore_index_labels_naming_y(balanced):
    y = torch.tensor([0, 1, 2, 3, -100, 0, 1, 2])
    remix = mixlab.Remix(class_counts=COUNTS, balanced=balanced, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"Remix: y holds the label -100.*\[0, 4\)") as err:
        remix(torch.rand(8, 3, 4, 4), y)
    _one_line(err)


def test_remix_target_refuses_short_or_negative_labels_naming_y():
    remix = mixlab.Remix(class_counts=COUNTS, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    params = remix.sample(torch.rand(8, 3, 4, 4), y)
    with pytest.raises(ValueError, match=r"y must be class indices of shape \(8,\).*shape \(4,\)") as err:
        remix.target(y[:4], params)
    _one_line(err)
    with pytest.raises(ValueError, match=r"y holds the label -100"):
        remix.target(torch.tensor([0, 1, 2, 3, -100, 1, 2, 3]), params)
    with pytest.raises(ValueError, match=r"labels reach 4, but class_counts has 4 classes"):
        remix.target_params(params, torch.tensor([0, 1, 2, 3, 4, 1, 2, 3]))


def test_balanced_partners_refuses_labels_outside_the_counts_naming_y():
    with pytest.raises(ValueError, match=r"y holds the label -100"):
        balanced_partners(torch.tensor([0, -100]), [1, 2])
    with pytest.raises(ValueError, match=r"labels reach 5, but class_counts has 2 classes"):
        balanced_partners(torch.tensor([0, 5]), [1, 2])


# -- 3. zero-size dimensions, every registered method --------------------------------------------

EMPTY_SHAPES = {"images": [(3, 0, 8), (3, 8, 0), (0, 8, 8)], "sequences": [(2, 0), (0, 16)],
                "volumes": [(1, 0, 4, 4)], "tokens": [(0, 6), (4, 0)], "vectors": [(0,)]}
C = 4


def _build(name, **options):
    extra = small_options(name, C)
    return methods.get(name).build(**{"alpha": 1.0, "generator": torch.Generator().manual_seed(0), **extra, **options})


EMPTY_CASES = [(n, kind, shape) for n in methods.available() for kind in methods.get(n).inputs
               for shape in EMPTY_SHAPES[kind]]


@pytest.mark.parametrize("name, kind, shape", EMPTY_CASES, ids=[f"{n}-{k}-{'x'.join(map(str, s))}"
                                                              for n, k, s in EMPTY_CASES])
def test_every_method_refuses_an_empty_dimension_naming_itself_and_the_shape(name, kind, shape):
    B = 4
    mixer = _build(name)
    x = torch.rand((B,) + shape)
    y = torch.arange(B, dtype=torch.float32)[:, None] if methods.get(name).task == "regression" else torch.arange(B) % C
    context = {"saliency": torch.rand((B,) + shape[1:])} if "saliency" in methods.get(name).needs else {}
    cls = methods.get(name).cls.__name__
    with pytest.raises(ValueError, match=rf"^{cls} cannot mix inputs with an empty dimension: .*"
                                         rf"{__import__('re').escape(str((B,) + shape))}") as err:
        mixer(x, y, **context)
    _one_line(err)
    with pytest.raises(ValueError, match=rf"^{cls} cannot mix"):
        mixer.sample(x, y, **context)


def test_empty_batch_and_disabled_mixers_still_pass_through():
    out, target = mixlab.SmoothMix()(torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 3, 8, 8) and target.params.lam.shape == (0,)
    x = torch.rand(2, 3, 0, 8)
    out, target = mixlab.TokenMix(enabled=False)(x, torch.arange(2))
    assert out.shape == x.shape and torch.equal(target.params.lam, torch.ones(2))


# -- 4. detection targets -----------------------------------------------------------------------

def _target(n, **extra):
    b = torch.rand(n, 4, generator=torch.Generator().manual_seed(n)) * 8
    b[:, 2:] += b[:, :2] + 1
    return {"boxes": b, "labels": torch.arange(n), **extra}


DETECTORS = {"MixUp": lambda: detection.MixUp(generator=torch.Generator().manual_seed(0)),
             "Mosaic": lambda: detection.Mosaic(generator=torch.Generator().manual_seed(0)),
             "CutMix": lambda: detection.CutMix(generator=torch.Generator().manual_seed(0))}


@pytest.mark.parametrize("which", ["MixUp", "Mosaic"])
@pytest.mark.parametrize("key, rows", [("scores", lambda n: torch.rand(n if n == 2 else 1)),
                                       ("keypoints", lambda n: torch.rand(n if n == 2 else 4, 5, 3))])
def test_detection_refuses_a_per_box_key_short_in_some_target(which, key, rows):
    targets = [_target(2, **{key: rows(2)}), _target(3, **{key: rows(3)})]
    with pytest.raises(ValueError, match=rf"targets\[1\]\['{key}'\] has \d+ rows? but targets\[1\] has 3 boxes") as err:
        DETECTORS[which]()(torch.rand(2, 3, 32, 32), targets)
    _one_line(err)


@pytest.mark.parametrize("which", ["MixUp", "Mosaic"])
def test_detection_keeps_a_per_image_key_of_one_shape_even_when_it_matches_a_box_count(which):
    # a per-image value shaped (2,) in every target: image 0 happens to have 2 boxes
    targets = [_target(2, scale=torch.tensor([1.0, 2.0])), _target(3, scale=torch.tensor([3.0, 4.0]))]
    _, out = DETECTORS[which]()(torch.rand(2, 3, 32, 32), targets)
    for t in out:
        assert t["boxes"].shape[0] == t["labels"].shape[0] == t["weights"].shape[0]


@pytest.mark.parametrize("which", sorted(DETECTORS))
def test_detection_refuses_labels_given_as_a_list_naming_the_target(which):
    targets = [dict(_target(2), labels=[0, 1]), _target(3)]
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] must be a tensor of shape \(2,\)") as err:
        DETECTORS[which]()(torch.rand(2, 3, 32, 32), targets)
    _one_line(err)


def test_error_descriptions_of_tensors_in_containers_stay_on_one_line():
    with pytest.raises(ValueError, match="targets must be a list of 2 dicts") as err:
        detection.MixUp()(torch.rand(2, 3, 32, 32), {"boxes": [torch.rand(2, 4)], "labels": [torch.arange(2)]})
    _one_line(err)
    assert "\n" not in mixlab._validate.describe([torch.rand(3, 4)])


# -- 5. balanced partners: linear memory, the same distribution ----------------------------------

def test_balanced_partners_draw_from_one_weight_vector(monkeypatch):
    shapes = []
    real = torch.multinomial

    def recording(input, num_samples, *args, **kwargs):
        shapes.append((tuple(input.shape), num_samples))
        assert input.ndim == 1, f"multinomial drew from a {tuple(input.shape)} weight matrix"
        return real(input, num_samples, *args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", recording)
    B = 16384
    y = torch.arange(B) % 10
    remix = mixlab.Remix(class_counts=[float(c) for c in range(1, 11)], balanced=True,
                         generator=torch.Generator().manual_seed(0))
    params = remix.sample(torch.rand(B, 2), y)
    assert shapes == [((B,), B)]
    assert params.index.shape == (B,) and int(params.index.min()) >= 0 and int(params.index.max()) < B


def test_balanced_partners_follow_inverse_class_counts_chi_square():
    from scipy.stats import chisquare

    gen = torch.Generator().manual_seed(7)
    counts = [1.0, 2.0, 4.0, 8.0]
    y = torch.tensor([0, 1, 1, 2, 2, 2, 3, 3, 3, 3])  # rows of each class
    draws = torch.cat([balanced_partners(y, counts, generator=gen) for _ in range(400)])  # 4000 partners
    w = 1.0 / torch.tensor(counts, dtype=torch.float64)[y]
    expected = (w / w.sum() * draws.numel()).numpy()
    observed = torch.bincount(draws, minlength=y.numel()).double().numpy()
    assert chisquare(observed, expected).pvalue > 1e-3


# -- 6. generator, timm labels, partner indices --------------------------------------------------

class _MetaGenerator(torch.Generator):
    """A generator that reports the meta device (the meta device draws no random numbers)."""

    @property
    def device(self):
        return torch.device("meta")


@pytest.mark.parametrize("make", [lambda g: mixlab.MixUp(generator=g), lambda g: mixlab.CutMix(generator=g),
                                  lambda g: detection.Mosaic(generator=g), lambda g: mixlab.timm.Mixup(generator=g)],
                         ids=["MixUp", "CutMix", "detection.Mosaic", "timm.Mixup"])
def test_a_meta_device_generator_is_refused_naming_generator(make):
    with pytest.raises(ValueError, match=r"generator must be a torch.Generator on a device that draws.*meta") as err:
        make(_MetaGenerator())
    _one_line(err)


@pytest.mark.parametrize("labels, got", [([0, 1, 2, 3, 4, 5, 6, 7], "7"), ([0, 1, -1, 3], "-1")])
def test_timm_mixup_refuses_labels_outside_num_classes(labels, got):
    x = torch.rand(len(labels), 3, 8, 8)
    with pytest.raises(ValueError, match=rf"target holds the class index {got}, but num_classes=4.*\[0, 4\)") as err:
        mixlab.timm.Mixup(num_classes=4, generator=torch.Generator().manual_seed(0))(x, torch.tensor(labels))
    _one_line(err)


def test_negative_partner_index_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"MixParams.index must hold partner rows >= 0, got -1") as err:
        MixParams(torch.full((4,), 0.5), torch.tensor([-1, 0, 1, 2]))
    _one_line(err)
    with pytest.raises(ValueError, match=r"MixParams.index must hold partner rows >= 0"):
        MixParams.from_weights(torch.full((4, 2), 0.5), torch.tensor([[0, -3], [1, 0], [2, 1], [3, 2]]))
    params = MixParams(torch.full((4,), 0.5), torch.tensor([1, 0, 3, 2]))
    params.index[0] = -9  # changed after the check: mix() still says what is wrong
    for call in (lambda: mixlab.mix(torch.rand(4, 2), params),
                 lambda: mixlab.MixedTarget(torch.arange(4), params).soft(num_classes=4)):
        with pytest.raises(IndexError, match=r"params.index holds a negative partner row \(-9\)") as err:
            call()
        assert "at least" not in _one_line(err)
