"""The method contract, checked for every registered method: generated from ``mixlab.methods.available()``.

A new method registered with ``@register`` is walked through every case here with no edit: dtypes
(float32, bfloat16, float16, uint8) x batch sizes (0, 1, 3, 5) x its modes x the ``--device``
fixture, and the entry points that can run in a DataLoader worker. What each case asserts:

- ``lam`` is the share of the original actually kept, per row (read back from the mixed pixels);
- ``enabled=False`` returns the batch unchanged, with ``lam`` 1;
- ``soft=True`` gives ``(B, C)`` rows summing to 1, and ``labels_getter`` is honoured;
- the input is untouched unless ``inplace=True`` (which gives the same result in the caller's tensor);
- params sharded by rows mix like the slice of the whole;
- ``torch.compile(fullgraph=True)`` without a generator, over changing batch sizes (symbolic from the first);
- draws differ across batches and across workers through the transform in a collate, ``MixCollate``
  and ``RandomChoice``, and repeat with the loader's seed (one loader runs every entry point, each on
  its own copy of the worker's RNG);
- integer label maps of every integer dtype follow binary regions exactly, or are refused naming ``roles=``.
"""
from __future__ import annotations

import inspect

import pytest
import torch
from _registry_cases import small_options

import mixlab
from mixlab import methods
from mixlab.mixer import Mixer, label_params

NAMES = methods.available()
C = 10  # classes
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.uint8)
SIZES = (0, 1, 3, 5)
H = W = 8
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3, torch.uint8: 2e-2}
INPUT_SHAPES = {"images": (3, H, W), "sequences": (2, 16), "volumes": (1, 4, 4, 4), "tokens": (4, 6), "vectors": (5,)}


def build(name, *, generator=None, **options):
    """The registered method ``name`` configured for the small inputs of this module."""
    info = methods.get(name)
    sig = inspect.signature(info.cls).parameters
    extra = small_options(name, C)
    if "block_num" in sig:  # PuzzleMix: its saliency from a stand-in model, unless the test gives the maps
        given = options.pop("saliency_given", False)
        extra.update(model=None if given else _Saliency(), criterion=None if given else _Saliency.score)
    elif "saliency" in info.needs:  # SnapMix: class activation maps from a small classifier, unless given
        given = options.pop("saliency_given", False)
        extra.update(model=None if given else _TinyClassifier())
    if "num_classes" in sig and info.task == "classification":
        extra["num_classes"] = C
    return info.build(**{"alpha": 1.0, "generator": generator, **extra, **options})


class _Saliency(torch.nn.Module):
    """A stand-in model whose input gradient is the image's own spatial gradient (PuzzleMix's saliency)."""

    def forward(self, x):
        return (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).sum(1) + (x[..., 1:] - x[..., :-1]).pow(2).flatten(1).sum(1)

    @staticmethod
    def score(out, y):
        return out.sum()


class _TinyClassifier(torch.nn.Module):
    """A stand-in CNN with torchvision's layout (a feature map, ``avgpool``, ``fc``): SnapMix's CAMs."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # its weights from seed 0, the global stream left as it was
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(4, C)

    def forward(self, x):
        return self.fc(self.avgpool(torch.relu(self.conv(x.float()))).flatten(1))


def context(name, B, device):
    """What a call needs besides the inputs (the registry's ``needs``): a saliency map, seeded by ``B``."""
    if "saliency" in methods.get(name).needs:
        return {"saliency": torch.rand(B, H, W, device=device, generator=torch.Generator(device=device).manual_seed(B))}
    return {}


def labels(name, B, device):
    if methods.get(name).task == "regression":
        return torch.arange(B, dtype=torch.float32, device=device)[:, None] * 3.0
    return torch.arange(B, device=device) % C  # every row its own class: the two sources of a row are visible


def rows_of(B, shape, dtype, device):
    """Row ``i`` holds the constant ``10 + 40 i`` (exact in every dtype), so each output position tells
    how much of it came from the original row."""
    values = 10.0 + 40.0 * torch.arange(B, dtype=torch.float64)
    x = values.view((B,) + (1,) * len(shape)).expand((B,) + shape)
    if dtype == torch.uint8 or not dtype.is_floating_point:
        return x.to(dtype).to(device).contiguous()
    return x.to(device=device, dtype=dtype).contiguous()


def kept_share(out, x, index):
    """Per row: the mean over positions of the original's weight, read from ``out``."""
    B = x.shape[0]
    a = x.double().flatten(1)
    b = x.double()[index].flatten(1)
    o = out.double().flatten(1)
    moved = index != torch.arange(B, device=index.device)
    w = torch.where(moved[:, None], (o - b) / (a - b).where(moved[:, None], torch.ones_like(a)), torch.ones_like(a))
    return w.mean(1), moved


def modes(name):
    return methods.get(name).modes


CASES = [(n, m) for n in NAMES for m in modes(n)]


def test_registry_lists_every_mixer_class_once_and_no_method_overrides_the_protocol():
    classes = {methods.get(n).cls for n in NAMES}
    exported = {getattr(mixlab, a) for a in dir(mixlab) if isinstance(getattr(mixlab, a, None), type)}
    subclasses = {c for c in exported if issubclass(c, Mixer) and c is not Mixer}
    assert subclasses <= classes, f"public Mixer classes missing from the registry: {subclasses - classes}"
    for cls in classes:
        assert "sample" not in cls.__dict__ and "__call__" not in cls.__dict__, cls
    with pytest.raises(TypeError, match="one call protocol"):
        type("Bad", (Mixer,), {"__call__": lambda self, x, y=None: x})


def test_every_entry_point_reads_the_registry():
    from mixlab_lab.config import ALPHA_FREE, MIXES

    assert list(MIXES) == ["none"] + methods.available(task="classification")
    assert set(ALPHA_FREE) == {n for n in NAMES if not methods.get(n).alpha and methods.get(n).task == "classification"}
    for name in NAMES:  # every method is mixlab.<Class>
        cls = methods.get(name).cls
        assert getattr(mixlab, cls.__name__) is cls and cls.__name__ in dir(mixlab)


def test_options_that_do_nothing_do_not_exist():
    for name in NAMES:
        params = inspect.signature(methods.get(name).cls).parameters
        for option in ("box_dims", "correct_lam"):
            if option in params:  # only where the method cuts trailing dims
                assert "sequences" in methods.get(name).inputs, (name, option)
        with pytest.raises(TypeError, match="has no option 'no_such_option'"):
            build(name, no_such_option=1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("name, mode", CASES)
def test_lam_is_the_share_kept_and_the_input_is_untouched(name, mode, B, dtype, device):
    g = torch.Generator(device=device).manual_seed(B + 7)
    given = dict(saliency_given=True) if context(name, 0, device) else {}  # constant rows have no saliency of their own
    mixer = build(name, mode=mode, pairing="flip" if mode == "pair" else "permutation", generator=g, **given)
    if dtype == torch.uint8 and name == "puzzlemix":
        pytest.skip("PuzzleMix mixes float images only (its saliency is an input gradient)")
    x = rows_of(B, (3, H, W), dtype, device)
    before = x.clone()
    version = x._version
    y = labels(name, B, device)
    mixed, target = mixer(x, y, **context(name, B, device))
    assert torch.equal(x, before) and x._version == version, "the caller's batch changed without inplace=True"
    assert mixed.shape == x.shape and mixed.dtype == x.dtype and mixed.device == x.device
    params = target.params  # the labels' parameters (Remix may weigh them differently from the inputs)
    if B == 0:
        return
    g2 = torch.Generator(device=device).manual_seed(B + 7)
    inputs = build(name, mode=mode, pairing="flip" if mode == "pair" else "permutation", generator=g2,
                   **given).sample(x, y, **context(name, B, device))
    if inputs.weights is not None:  # k-way: each output row is sum_j w_j x[index_j]; lam is the original's weight
        v = x.double().flatten(1)[:, 0]  # the row constants
        expected = (inputs.weights.double() * v[inputs.index]).sum(1)
        atol = 0.51 if dtype == torch.uint8 else TOL[dtype] * 200
        torch.testing.assert_close(mixed.double().flatten(1).mean(1), expected, atol=atol, rtol=0)
        assert torch.equal(inputs.lam, inputs.weights[:, 0]) and torch.equal(inputs.index[:, 0], torch.arange(B))
        return
    share, moved = kept_share(mixed, x, inputs.index)
    torch.testing.assert_close(share[moved], inputs.lam.double()[moved], atol=TOL[dtype] + 1e-6, rtol=0)
    if inputs.region is not None:
        torch.testing.assert_close(inputs.lam, inputs.region.lam)
    assert params.lam.shape == (B,)


KIND_CASES = [(n, kind) for n in NAMES for kind in methods.get(n).inputs]


@pytest.mark.parametrize("name, kind", KIND_CASES)
def test_every_input_kind_the_registry_claims_mixes_with_lam_the_share_kept(name, kind, device):
    B = 5
    x = rows_of(B, INPUT_SHAPES[kind], torch.float32, device)
    y = labels(name, B, device)
    given = dict(saliency_given=True) if context(name, 0, device) else {}
    g = torch.Generator(device=device).manual_seed(3)
    mixed, _ = build(name, mode="sample", generator=g, **given)(x, y, **context(name, B, device))
    assert mixed.shape == x.shape
    g = torch.Generator(device=device).manual_seed(3)
    params = build(name, mode="sample", generator=g, **given).sample(x, y, **context(name, B, device))
    if params.weights is not None:
        expected = (params.weights.double() * x.double().flatten(1)[:, 0][params.index]).sum(1)
        torch.testing.assert_close(mixed.double().flatten(1).mean(1), expected)
        return
    share, moved = kept_share(mixed, x, params.index)
    torch.testing.assert_close(share[moved], params.lam.double()[moved], atol=1e-5, rtol=0)


@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("name, mode", CASES)
def test_enabled_false_leaves_the_batch(name, mode, B, device):
    mixer = build(name, mode=mode, pairing="flip" if mode == "pair" else "permutation", enabled=False,
                  generator=torch.Generator(device=device).manual_seed(0))
    x = torch.rand(B, 3, H, W, device=device)
    mixed, target = mixer(x, labels(name, B, device))
    assert torch.equal(mixed, x)
    assert torch.equal(target.params.lam, torch.ones(B, device=device))


@pytest.mark.parametrize("B", (1, 5))
@pytest.mark.parametrize("name", [n for n in NAMES if methods.get(n).task == "classification"])
def test_soft_rows_sum_to_one_and_labels_getter_is_honoured(name, B, device):
    g = torch.Generator(device=device).manual_seed(3)
    x, y = torch.rand(B, 3, H, W, device=device), labels(name, B, device)
    mixed, soft = build(name, soft=True, generator=g)(x, y)
    assert soft.shape == (B, C) and soft.dtype.is_floating_point
    g = torch.Generator(device=device).manual_seed(3)
    mixer = build(name, generator=g)
    weights = label_params(mixer, mixer.sample(x, y), y).label_weights  # SnapMix: CAM shares, any sum
    mass = torch.ones(B, device=device) if weights is None else weights.sum(1)
    torch.testing.assert_close(soft.sum(1), mass)
    g = torch.Generator(device=device).manual_seed(3)
    out = build(name, soft=True, labels_getter=lambda b: b["cls"], generator=g)({"img": x, "cls": y, "id": "a"})
    assert torch.equal(out["img"], mixed) and torch.equal(out["cls"], soft) and out["id"] == "a"


@pytest.mark.parametrize("B", (1, 5))
@pytest.mark.parametrize("dtype", (torch.float32, torch.uint8), ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_inplace_gives_the_same_result_in_the_callers_tensor(name, dtype, B, device):
    if dtype == torch.uint8 and name == "puzzlemix":
        pytest.skip("PuzzleMix mixes float images only")
    x = (torch.rand(B, 3, H, W, device=device) * 255).to(dtype)
    y = labels(name, B, device)
    expected, _ = build(name, generator=torch.Generator(device=device).manual_seed(5))(x, y)
    x2 = x.clone()
    out, _ = build(name, inplace=True, generator=torch.Generator(device=device).manual_seed(5))(x2, y)
    assert out.data_ptr() == x2.data_ptr()
    assert torch.equal(x2, expected)


@pytest.mark.parametrize("name, mode", CASES)
def test_params_sharded_by_rows_mix_like_the_slice(name, mode, device):
    B = 5
    g = torch.Generator(device=device).manual_seed(11)
    mixer = build(name, mode=mode, pairing="flip" if mode == "pair" else "permutation", generator=g)
    x, y = torch.rand(B, 3, H, W, device=device), labels(name, B, device)
    params = mixer.sample(x, y)
    whole = mixlab.mix(x, params)
    for a, b in ((0, 2), (2, 5), (4, 5)):
        torch.testing.assert_close(mixlab.mix(x[a:b], params.rows(a, b), partner=x), whole[a:b])


@pytest.mark.parametrize("name", NAMES)
def test_compiles_fullgraph_without_a_generator_over_changing_batch_sizes(name):
    info = methods.get(name)
    if "saliency" in info.needs:
        pytest.skip("PuzzleMix solves its graph cut on the host (scipy max-flow): not traceable by design")
    torch._dynamo.reset()
    mixer = build(name, mode="sample")

    def step(x, y):
        mixed, target = mixer(x, y)
        return mixed, target.params.lam

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for B in (3, 5, 4):
        x, y = torch.rand(B, 3, H, W), labels(name, B, "cpu")
        if B == 3:
            # the batch size symbolic from the first call: where the method allows it, one dynamic-shape trace
            # serves every size (the default would trace B=3 statically, then again dynamically at B=5: the
            # same fullgraph check at twice the cost). A method that specialises on B still recompiles and is
            # still checked at every size.
            torch._dynamo.maybe_mark_dynamic(x, 0)
            torch._dynamo.maybe_mark_dynamic(y, 0)
        mixed, lam = compiled(x, y)
        assert mixed.shape == x.shape and lam.shape == (B,)
        assert bool(((lam >= 0) & (lam <= 1)).all())
    torch._dynamo.reset()


INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
@pytest.mark.parametrize("name", [n for n in NAMES if "images" in methods.get(n).inputs])
def test_integer_maps_follow_binary_regions_or_are_refused_naming_roles(name, dtype, device):
    B = 4
    g = torch.Generator(device=device).manual_seed(2)
    x = torch.rand(B, 3, H, W, device=device)
    # map value = 16 * row + a position code < 16: every value names its row
    code = (torch.arange(H * W, device=device) % 16).view(H, W)
    m = (16 * torch.arange(B, device=device).view(B, 1, 1) + code).to(dtype)
    batch = {"image": x, "mask": m, "labels": labels(name, B, device)}
    mixer = build(name, generator=g)
    try:
        out = mixer(batch)
    except (ValueError, TypeError) as err:
        assert "roles=" in str(err), str(err)
        return
    params = out["labels"].params
    region = params.region
    assert region is not None and region.pasteable, f"{name} returned a map without a binary region"
    om = out["mask"].long()
    rows = om // 16  # which row each value came from
    ar = torch.arange(B, device=device).view(B, 1, 1)
    partner = params.index.view(B, 1, 1)
    assert bool(((rows == ar) | (rows == partner)).all()), "a map value came from neither source"
    own = (rows == ar).flatten(1)
    # the map follows the image: where the image took the partner, so did the map
    taken = region.mask(3).expand(B, H, W).flatten(1)
    moved = params.index != torch.arange(B, device=device)
    assert torch.equal(own[moved], ~taken[moved])


def _collect(loader):
    """Per entry point: one tuple of ``lam`` and partner rows for each batch, over 2 epochs."""
    draws = {}
    for _ in range(2):  # epochs
        for batches in loader:
            for entry, (_, target) in batches.items():
                draws.setdefault(entry, []).append(tuple(torch.round(target.params.lam * 1e6).tolist())
                                                   + tuple(target.params.index.flatten().tolist()))
    return draws


class _Rows(torch.utils.data.Dataset):
    def __len__(self):
        return 48

    def __getitem__(self, i):
        return torch.full((3, H, W), float(i)), i % C


def _loaders(name, seed):
    from mixlab.data import MixCollate

    collate = torch.utils.data.default_collate
    mixer = build(name, mode="sample")

    class InWorker:  # the transform itself, called in the worker's collate
        def __call__(self, batch):
            return mixer(*collate(batch))

    entries = {"transform": InWorker(), "MixCollate": MixCollate(build(name, mode="sample")),
               "RandomChoice": MixCollate(mixlab.RandomChoice([build(name, mode="sample"), build(name, mode="sample")]))}
    try:  # the Hugging Face collator, run in the workers as the Trainer's DataLoader would
        from mixlab.transformers import mixup_for_trainer
    except ImportError:
        return entries_loaders(entries, seed)
    hf, _ = mixup_for_trainer(build(name, mode="sample"), num_classes=C)

    class HF:
        def __call__(self, batch):
            out = hf([{"pixel_values": x, "labels": torch.tensor(y)} for x, y in batch])
            return out["pixel_values"], out["labels"].target

    entries["HF collator"] = HF()
    return entries_loaders(entries, seed)


class _EveryEntry:
    """One ``collate_fn`` calling every entry point's collate on the same samples, in the same worker.

    One loader (2 forked workers per epoch) instead of one per entry point: worker start-up was most of this
    test's time. Each entry keeps its own mixer. Mixers built without a generator draw from the worker's global
    RNG, which the loader seeds per worker and epoch: each entry runs on its own copy of that RNG, starting
    from the state the loader's seeding left (what it would see in a loader of its own), so one entry's draws
    never move another's and a failure names the entry at fault.
    """

    def __init__(self, entries):
        self.entries = entries
        self.states = {}  # entry -> its global-RNG state in this worker; keyed by the worker's seed

    def __call__(self, batch):
        seed = torch.utils.data.get_worker_info().seed
        if self.states.get("seed") != seed:  # a new worker (or epoch): every entry starts from the loader's seeding
            start = torch.get_rng_state()
            self.states = {"seed": seed, **{k: start for k in self.entries}}
        out = {}
        for k, c in self.entries.items():
            torch.set_rng_state(self.states[k])
            out[k] = c(batch)
            self.states[k] = torch.get_rng_state()
        return out


def entries_loaders(entries, seed):
    return torch.utils.data.DataLoader(_Rows(), batch_size=6, num_workers=2, collate_fn=_EveryEntry(entries),
                                       generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", [n for n in NAMES if methods.get(n).task == "classification"
                                  and "saliency" not in methods.get(n).needs])
def test_draws_differ_across_batches_and_workers_and_repeat_with_the_loader_seed(name):
    first = _collect(_loaders(name, 0))
    again = _collect(_loaders(name, 0))
    assert len(first) >= 3 and all(len(d) == 16 for d in first.values()), {k: len(d) for k, d in first.items()}
    for entry, draws in first.items():
        assert len(set(draws)) == len(draws), f"{entry}: repeated draws {draws}"
        assert draws == again[entry], f"{entry}: a seeded loader did not repeat"
