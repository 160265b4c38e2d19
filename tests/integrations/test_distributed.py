"""mixlab.distributed (gathers, global pairing) and mixlab_lab.distributed (process-group
helpers), and DDP training across 2 CPU processes (gloo).

The 2-process tests start each rank with the ``spawn`` start method and a free port, poll
them with a deadline, and kill leftovers, so a broken collective fails the test instead of
hanging it. Ranks hand results back through ``torch.save`` files (loaded with
``weights_only=True``).
"""
from __future__ import annotations

import multiprocessing
import os
import socket
import time
import traceback

import pytest
import torch
from _spawn import run_to_deadline
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import mixlab
from mixlab import distributed as D
from mixlab_lab import distributed as LD
from mixlab_lab.models import AirbenchCPU

WORLD = 2
DEADLINE_S = 90.0


# --------------------------------------------------------------------------- harness


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, out_dir, timeout_s, fn_name, kwargs):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    path = os.path.join(out_dir, f"rank{rank}.pt")
    try:
        info = LD.init_from_env(timeout_s=timeout_s)
        result = globals()[fn_name](info, **kwargs)
        torch.save({"ok": True, "result": result}, path + ".tmp")
    except Exception:  # reported to the parent through the result file
        torch.save({"ok": False, "error": traceback.format_exc()}, path + ".tmp")
    os.replace(path + ".tmp", path)
    os._exit(0)  # skip process-group teardown: a dead peer must not make this exit hang


def run_ranks(tmp_path, fn, *, timeout_s=30.0, deadline_s=DEADLINE_S, **kwargs) -> list:
    """Run ``fn(info, **kwargs)`` on WORLD spawned ranks; return each rank's outcome dict."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(r, WORLD, port, str(tmp_path), timeout_s, fn.__name__, kwargs))
             for r in range(WORLD)]
    run_to_deadline(procs, deadline_s)
    outcomes = []
    for r in range(WORLD):
        path = tmp_path / f"rank{r}.pt"
        outcomes.append(torch.load(path, weights_only=True) if path.exists() else {"ok": False, "error": "no result"})
    return outcomes


def results(outcomes) -> list:
    for r, o in enumerate(outcomes):
        assert o["ok"], f"rank {r} failed:\n{o['error']}"
    return [o["result"] for o in outcomes]


# --------------------------------------------------------------------------- single process


def test_helpers_are_single_process_noops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = LD.init_from_env(timeout_s=5)
    assert info == D.DistInfo(0, 1, 0, torch.device("cpu"), True) and not info.distributed
    assert LD.is_main() and D.get_info() == info
    LD.barrier()
    assert LD.broadcast_object({"a": 1}) == {"a": 1}
    assert D.gather_sizes(5) == [5]
    x = torch.ones(3, requires_grad=True)
    g = D.gather_batch({"x": x, "y": torch.arange(3)})
    assert not g["x"].requires_grad and torch.equal(g["y"], torch.arange(3))
    s = LD.all_reduce_sum({"n": torch.tensor(4), "v": torch.tensor([0.5, 2.0])})
    assert s["n"].dtype == torch.int64 and int(s["n"]) == 4 and torch.equal(s["v"], torch.tensor([0.5, 2.0]))


def test_rank_generator_streams():
    assert torch.equal(torch.rand(4, generator=LD.rank_generator(11, 0)),
                       torch.rand(4, generator=torch.Generator().manual_seed(11)))
    a, b = (torch.rand(8, generator=LD.rank_generator(11, r)) for r in (1, 2))
    assert not torch.equal(a, b)
    assert torch.equal(a, torch.rand(8, generator=LD.rank_generator(11, 1)))  # repeatable
    assert not torch.equal(a, torch.rand(8, generator=LD.rank_generator(12, 1)))


@pytest.mark.parametrize("call, match", [
    (lambda: LD.init_from_env(timeout_s=0), "timeout_s"),
    (lambda: LD.init_from_env(backend="mpi"), "backend"),
    (lambda: LD.rank_generator(-1, 0), "seed"),
    (lambda: LD.rank_generator(1, -2), "rank"),
    (lambda: D.gather_sizes(-1), "batch_size"),
    (lambda: LD.ddp_mean(torch.ones(2, 2)), "per_sample_loss"),
    (lambda: D.GlobalMixUp(0.4), "seed= or generator="),
    (lambda: D.GlobalMixer(mixlab.MixUp(0.4)), "generator"),
    (lambda: D.GlobalMixer(mixlab.MixUp(0.4, inplace=True, generator=torch.Generator())), "inplace"),
    (lambda: D.local_params(mixlab.sample_params(4, alpha=1.0), 3, 2), "outside"),
])
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_all_reduce_sum_rejects_non_tensors():
    with pytest.raises(TypeError, match="tensors"):
        LD.all_reduce_sum({"n": 3})


def test_init_from_env_bad_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        LD.init_from_env()


def test_local_params_slices_rows_and_keeps_global_index():
    g = torch.Generator().manual_seed(0)
    p = mixlab.sample_params(10, alpha=0.5, mode="sample", k=3, generator=g)
    loc = D.local_params(p, 4, 3)
    assert torch.equal(loc.lam, p.lam[4:7]) and torch.equal(loc.index[:, 1:], p.index[4:7, 1:])
    assert torch.equal(loc.index[:, 0], torch.arange(3))


def test_global_mixer_single_process_equals_core_transform():
    x, y = torch.rand(9, 3, 6, 6), torch.arange(9) % 4
    for make in (lambda g: mixlab.MixUp(0.4, mode="sample", generator=g),
                 lambda g: mixlab.CutMix(1.0, mode="sample", generator=g),
                 lambda g: mixlab.MixUpOrCutMix(mode="sample", generator=g)):
        got_x, got_t = D.GlobalMixer(make(torch.Generator().manual_seed(5)))(x, y)
        ref_x, ref_t = make(torch.Generator().manual_seed(5))(x, y)
        assert torch.equal(got_x, ref_x)
        assert torch.equal(got_t.soft(4), ref_t.soft(4))


def test_ddp_mean_single_process_is_mean():
    v = torch.tensor([1.0, 2.0, 6.0])
    assert torch.allclose(LD.ddp_mean(v), v.mean())
    assert torch.allclose(LD.ddp_mean(v, [3, 5]), v.sum() * 2 / 8)


# --------------------------------------------------------------------------- two processes


def _global_batch(n=11):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 3, 6, 6, generator=g), torch.randint(0, 5, (n,), generator=g)


SPLIT = [6, 5]  # uneven on purpose: the last batch of an epoch


def _local_rows(rank, n_rows=SPLIT):
    start = sum(n_rows[:rank])
    return slice(start, start + n_rows[rank])


def _two_rank_worker(info):
    x, y = _global_batch()
    rows = _local_rows(info.rank)
    xl, yl = x[rows], y[rows]
    out = {"info": [info.rank, info.world_size, int(info.is_main), int(LD.is_main())]}
    out["sizes"] = torch.tensor(D.gather_sizes(xl.shape[0]))
    gathered = D.gather_batch({"x": xl.clone().requires_grad_(), "y": yl})
    out["gathered_x"], out["gathered_y"] = gathered["x"], gathered["y"]
    out["grad_free"] = torch.tensor(not gathered["x"].requires_grad)
    red = LD.all_reduce_sum({"n": torch.tensor(info.rank + 1), "v": torch.full((2,), 0.25 * info.rank)})
    out["sum_n"], out["sum_v"] = red["n"], red["v"]
    out["bcast"] = torch.tensor(LD.broadcast_object({"step": 7 + info.rank})["step"])
    out["rank_draw"] = torch.rand(3, generator=LD.rank_generator(2))
    for name, make in (("mixup", lambda g: mixlab.MixUp(0.4, mode="sample", generator=g)),
                       ("cutmix", lambda g: mixlab.CutMix(1.0, mode="sample", generator=g)),
                       ("both", lambda g: mixlab.MixUpOrCutMix(mode="sample", generator=g, label_smoothing=0.1))):
        mixed, target = D.GlobalMixer(make(torch.Generator().manual_seed(5)))(xl, yl)
        out[name + "_x"], out[name + "_soft"] = mixed.detach(), target.soft(5)
        out[name + "_loss"] = target.loss(F.cross_entropy, torch.zeros(len(yl), 5), reduction="none")
    try:  # ranks seeded differently must be refused
        D.GlobalMixer(mixlab.MixUp(0.4, generator=torch.Generator().manual_seed(info.rank)))(xl, yl)
        out["mismatch_refused"] = torch.tensor(False)
    except ValueError as e:
        out["mismatch_refused"] = torch.tensor("differs between ranks" in str(e))
    LD.barrier()
    out["ddp"] = _ddp_part(info)
    # airbench-cpu whitens from its first training batch: each rank's shard differs, the filters must not.
    net = AirbenchCPU(3, 5, (8, 8), widths=(4, 4, 4)).train()
    net(_whitening_batch(info.rank))
    out["whiten"] = net.whiten.weight.detach().clone()
    return out


def _whitening_batch(rank):
    return torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(100 + rank))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One 2-process job runs the collectives, global-pairing and DDP-training checks."""
    return results(run_ranks(tmp_path_factory.mktemp("two_ranks"), _two_rank_worker))


def test_two_ranks_share_rank0_whitening(two_ranks):
    """airbench-cpu's frozen whitening filters: rank 0's (from its own first batch) on every rank."""
    single = AirbenchCPU(3, 5, (8, 8), widths=(4, 4, 4))
    single.init_whitening(_whitening_batch(0))  # no process group here: rank 0's batch alone
    other = AirbenchCPU(3, 5, (8, 8), widths=(4, 4, 4))
    other.init_whitening(_whitening_batch(1))
    assert not torch.allclose(single.whiten.weight, other.whiten.weight)  # the shards would disagree
    for r in two_ranks:
        assert torch.equal(r["whiten"], single.whiten.weight)


def test_two_ranks_collectives_and_global_pairing(two_ranks):
    r0, r1 = two_ranks
    x, y = _global_batch()
    assert r0["info"] == [0, 2, 1, 1] and r1["info"] == [1, 2, 0, 0]
    for r in (r0, r1):
        assert r["sizes"].tolist() == SPLIT
        assert torch.equal(r["gathered_x"], x) and torch.equal(r["gathered_y"], y) and bool(r["grad_free"])
        assert int(r["sum_n"]) == 3 and r["sum_n"].dtype == torch.int64
        assert torch.equal(r["sum_v"], torch.full((2,), 0.25))
        assert int(r["bcast"]) == 7
        assert bool(r["mismatch_refused"])
    assert not torch.equal(r0["rank_draw"], r1["rank_draw"])
    # Global pairing: the ranks' rows together are exactly the single-process mix of the whole batch.
    for name, make in (("mixup", lambda g: mixlab.MixUp(0.4, mode="sample", generator=g)),
                       ("cutmix", lambda g: mixlab.CutMix(1.0, mode="sample", generator=g)),
                       ("both", lambda g: mixlab.MixUpOrCutMix(mode="sample", generator=g, label_smoothing=0.1))):
        ref_x, ref_t = make(torch.Generator().manual_seed(5))(x, y)
        assert torch.equal(torch.cat([r0[name + "_x"], r1[name + "_x"]]), ref_x), name
        assert torch.equal(torch.cat([r0[name + "_soft"], r1[name + "_soft"]]), ref_t.soft(5)), name
        ref_loss = ref_t.loss(F.cross_entropy, torch.zeros(len(y), 5), reduction="none")
        assert torch.allclose(torch.cat([r0[name + "_loss"], r1[name + "_loss"]]), ref_loss), name
    # Partners really cross ranks: some rank-0 row mixes with a rank-1 row.
    p = mixlab.sample_params(len(y), alpha=0.4, mode="sample", generator=torch.Generator().manual_seed(5))
    assert (p.index[: SPLIT[0]] >= SPLIT[0]).any()


def _model():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(108, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _train(model, batches, mixer, loss_of, steps=4):
    """SGD on mixed batches; ``loss_of(per_sample)`` reduces the per-sample mixed losses."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(steps):
        x, y = batches(step)
        mixed, target = mixer(x, y)
        loss = loss_of(target.loss(F.cross_entropy, model(mixed), reduction="none"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _batch_at(step, n=11):
    x, y = _global_batch(n)
    return x.roll(step, 0), y.roll(step, 0)  # a different global batch order each step


SPLITS = ([6, 5], [6, 6])  # uneven (an epoch's last batch) and even local batches


def _ddp_part(info):
    from torch.nn.parallel import DistributedDataParallel as DDP

    out = {}
    for split in SPLITS:
        rows = _local_rows(info.rank, split)
        for name, loss_of in (("ddp_mean", lambda per: LD.ddp_mean(per)), ("plain_mean", lambda per: per.mean())):
            model = DDP(_model())
            mixer = D.GlobalMixUp(0.4, seed=9)
            state = _train(model, lambda s: tuple(t[rows] for t in _batch_at(s, sum(split))), mixer, loss_of)
            out[f"{name}{split}"] = {k.removeprefix("module."): v for k, v in state.items()}
    return out


def test_ddp_training_matches_single_process_on_concatenated_batch(two_ranks):
    r0, r1 = (r["ddp"] for r in two_ranks)
    for split in SPLITS:
        ref = _train(_model(), lambda s: _batch_at(s, sum(split)),
                     mixlab.MixUp(0.4, mode="sample", generator=torch.Generator().manual_seed(9)),
                     lambda per: per.mean())
        got = r0[f"ddp_mean{split}"]
        for key, want in ref.items():
            # Both ranks end identical, and equal to one process training on the whole batch.
            assert torch.equal(got[key], r1[f"ddp_mean{split}"][key]), key
            torch.testing.assert_close(got[key], want, rtol=1e-5, atol=1e-6)
        # A plain local mean is right only for equal local batches: DDP averages ranks, not rows.
        plain = r0[f"plain_mean{split}"]
        same = all(torch.allclose(plain[k], ref[k], rtol=1e-5, atol=1e-6) for k in ref)
        assert same == (split[0] == split[1]), split


def _stuck_worker(info):
    LD.all_reduce_sum(torch.ones(1))  # everyone is up
    if info.rank == 1:
        time.sleep(5)  # stuck: joins no collective while rank 0 waits (3 s timeout), then dies
        os._exit(0)
    try:
        LD.all_reduce_sum(torch.ones(1))
        LD.barrier()
    except Exception as e:  # the point of the test: an error, not a hang
        return {"raised": type(e).__name__ + ": " + str(e)[:300]}
    return {"raised": ""}


def test_stuck_rank_makes_the_others_raise_after_the_timeout(tmp_path):
    """A rank that stops joining collectives (hung or dead) makes the others raise, not hang.

    (A rank *killed* under torchrun is in test_distributed_lab.py: the launcher stops the job.)
    """
    outcomes = run_ranks(tmp_path, _stuck_worker, timeout_s=3.0, deadline_s=45.0)
    r0 = results(outcomes[:1])[0]
    assert r0["raised"], "rank 0 finished a collective that a missing rank never joined"
    assert "Timed out" in r0["raised"], r0  # the collective's own timeout fired


@settings(derandomize=True, max_examples=60)
@given(n=st.integers(0, 40), world=st.integers(1, 5))
def test_shard_is_distributed_sampler_like(n, world):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shards = [LD.shard(perm, r, world) for r in range(world)]
    per_rank = -(-n // world)  # ceil
    assert all(len(s) == per_rank for s in shards)  # equal batches on every rank
    if n:
        assert set(torch.cat(shards).tolist()) == set(range(n))  # every row is seen
        padded = torch.stack(shards, 1).reshape(-1)  # interleaved back: the order, then its first rows again
        assert torch.equal(padded[:n], perm)
        assert torch.equal(padded[n:], perm.repeat(world)[: len(padded) - n])
    with pytest.raises(ValueError, match="rank"):
        LD.shard(perm, world, world)


@settings(derandomize=True, max_examples=30)
@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=4).filter(lambda s: sum(s) > 0))
def test_ddp_mean_gives_every_global_row_weight_one_over_n(sizes):
    # Summing each rank's ddp_mean gradient and dividing by world size (what DDP does) weights every row 1/N.
    grads = []
    for b in sizes:
        per = torch.ones(b, requires_grad=True)
        LD.ddp_mean(per, sizes).backward()
        grads.append(per.grad / len(sizes))
    assert torch.allclose(torch.cat(grads), torch.full((sum(sizes),), 1 / sum(sizes)))
