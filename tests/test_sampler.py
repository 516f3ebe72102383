"""The modality length-grouped batch sampler: purity, sharding, determinism, resume, Lightning's re-creation."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from minillava.data.sampler import ModalityLengthGroupedBatchSampler as Sampler

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def rows(n: int = 403, text_share: float = 0.2, seed: int = 0) -> tuple[list[int], list[bool]]:
    """Lengths and image flags: image rows 270-900 tokens, text rows 20-1500."""
    rng = random.Random(seed)
    has_image = [rng.random() >= text_share for _ in range(n)]
    return [rng.randint(270, 900) if img else rng.randint(20, 1500) for img in has_image], has_image


def shards(world: int, batch: int = 4, drop_last: bool = True, epoch: int = 0, **kw) -> list[list[list[int]]]:
    lengths, has_image = rows(**kw)
    samplers = [Sampler(None, batch, drop_last, lengths=lengths, has_image=has_image, seed=5, group=4, epoch=epoch,
                        rank=r, world_size=world) for r in range(world)]
    out = [list(s) for s in samplers]
    assert all(len(o) == len(s) for o, s in zip(out, samplers))  # __len__ is the per-rank count
    return out


@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("drop_last", [True, False])
def test_every_rank_runs_the_same_steps_of_one_modality_each_row_at_most_once(world, drop_last):
    lengths, has_image = rows()
    per_rank = shards(world, drop_last=drop_last)
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) > 0
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == len(set(seen))  # no row twice in an epoch, over all ranks
    for step in zip(*per_rank):  # one global step: all ranks' batches
        assert all(b for b in step)
        assert len({has_image[i] for b in step for i in b}) == 1  # all-image or all-text, on every rank
        if drop_last:
            assert all(len(b) == 4 for b in step)
        # the step's rows sorted by length, rank r the r-th slice: similar lengths at the same time
        flat = [i for b in step for i in b]
        assert [lengths[i] for i in flat] == sorted(lengths[i] for i in flat)
    n_img, n_txt = sum(has_image), len(has_image) - sum(has_image)
    if drop_last:  # only incomplete global steps are left out
        assert len(seen) == (n_img // (4 * world) + n_txt // (4 * world)) * 4 * world
    elif world == 1:
        assert sorted(seen) == list(range(len(lengths)))
    else:  # a short step runs when each rank gets a row of it
        assert len(seen) == sum(n - (n % (4 * world) if n % (4 * world) < world else 0) for n in (n_img, n_txt))


def test_batches_group_similar_lengths():
    lengths, has_image = rows(n=2000, text_share=0)
    grouped = list(Sampler(None, 8, True, lengths=lengths, has_image=has_image, group=16))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in grouped) / len(grouped)
    assert spread < 0.1 * (max(lengths) - min(lengths))


def test_plan_depends_on_seed_and_epoch_only():
    lengths, has_image = rows()
    make = lambda seed, epoch: Sampler(None, 4, True, lengths=lengths, has_image=has_image, seed=seed, epoch=epoch)
    assert list(make(1, 0)) == list(make(1, 0))
    assert list(make(1, 0)) != list(make(1, 1)) and list(make(1, 0)) != list(make(2, 0))
    s = make(1, 0)
    assert [list(s), list(s)] == [list(make(1, 0)), list(make(1, 1))]  # a full pass moves on to the next epoch
    s.set_epoch(7)
    assert list(s) == list(make(1, 7))


def test_lightning_set_epoch_reaches_the_batch_sampler():
    """Lightning calls set_epoch on dataloader.sampler and dataloader.batch_sampler.sampler only."""
    lengths, has_image = rows()
    s = Sampler(None, 4, True, lengths=lengths, has_image=has_image, seed=1)
    loader = DataLoader(range(len(lengths)), batch_sampler=s)
    _set_sampler_epoch(loader, 3)
    assert s.epoch == 3 and [b.tolist() for b in loader] == s.plan(3)
    _set_sampler_epoch(loader, 2)
    assert [b.tolist() for b in loader] == s.plan(2)


@pytest.mark.parametrize("world", [1, 3])
def test_resume_skips_the_batches_already_run_in_the_first_pass_only(world):
    lengths, has_image = rows()
    kw = dict(lengths=lengths, has_image=has_image, seed=2, world_size=world)
    for rank in range(world):
        full = list(Sampler(None, 4, True, epoch=1, rank=rank, **kw))
        resumed = Sampler(None, 4, True, epoch=1, start_batch=5, rank=rank, **kw)
        assert len(resumed) == len(full)  # the epoch's length; the first pass yields its tail
        assert list(resumed) == full[5:]
        assert list(resumed) == list(Sampler(None, 4, True, epoch=2, rank=rank, **kw))  # next epoch: whole
    other = Sampler(None, 4, True, epoch=1, start_batch=5, **kw)
    other.set_epoch(0)  # the resume point belongs to epoch 1: epoch 0 plays whole
    assert list(other) == list(Sampler(None, 4, True, epoch=0, **kw))


def test_rank_and_world_come_from_a_distributed_sampler_first():
    lengths, _ = rows(n=40)
    dist = DistributedSampler(range(40), num_replicas=4, rank=2)
    s = Sampler(dist, 2, True, lengths=lengths, rank=0, world_size=1)
    assert (s.rank, s.world_size, len(s)) == (2, 4, 5)
    assert (Sampler(None, 2, True, lengths=lengths).rank, Sampler(None, 2, True, lengths=lengths).world_size) == (0, 1)
    with pytest.raises(ValueError, match="rank 3 is not in"):
        Sampler(None, 2, True, lengths=lengths, rank=3, world_size=3)


@pytest.mark.parametrize("world", [2, 3])
def test_lightning_re_creates_it_around_its_distributed_sampler(world):
    """What Lightning does under `--trainer.strategy ddp`: the batch sampler built in a dataloader hook is
    re-created from its captured arguments with `sampler=DistributedSampler(...)` (the former sampler crashed
    with "'DistributedSampler' object is not subscriptable")."""
    lengths, has_image = rows()
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):  # as in the hook
        loader = DataLoader(range(len(lengths)), num_workers=0,
                            batch_sampler=Sampler(None, 4, True, lengths=lengths, has_image=has_image, seed=5,
                                                  group=4, epoch=1, start_batch=2))
    for rank in range(world):
        dist = _update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=world, rank=rank))
        sampler = dist.batch_sampler
        assert isinstance(sampler, Sampler) and (sampler.rank, sampler.world_size) == (rank, world)
        direct = Sampler(None, 4, True, lengths=lengths, has_image=has_image, seed=5, group=4, epoch=1,
                         rank=rank, world_size=world)
        assert [b.tolist() for b in dist] == list(direct)[2:]


def test_one_modality_on_one_rank_plans_as_the_former_sampler():
    """One modality on one rank: the same batches as the former LengthGroupedBatchSampler (the toy run's)."""
    lengths, _ = rows(n=517)

    def former(epoch: int, batch: int = 8, group: int = 32) -> list[list[int]]:
        g = torch.Generator().manual_seed(3 * 100_003 + epoch)
        order = torch.randperm(len(lengths), generator=g).tolist()
        batches = []
        for start in range(0, len(order), batch * group):
            chunk = sorted(order[start : start + batch * group], key=lambda i: lengths[i])
            batches += [chunk[i : i + batch] for i in range(0, len(chunk), batch)]
        batches = [b for b in batches if len(b) == batch]
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    s = Sampler(None, 8, True, lengths=lengths, seed=3)
    assert [list(s) for _ in range(3)] == [former(e) for e in range(3)]


def _padding_benchmark():
    spec = importlib.util.spec_from_file_location("padding", BENCHMARKS / "padding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_padding_benchmark_sees_grouping_cut_padding():
    padding = _padding_benchmark()
    lengths, has_image = rows(n=600)
    random_share = padding.padding_share(lengths, has_image, batch_size=4, world_size=2, grouped=False)
    grouped_share = padding.padding_share(lengths, has_image, batch_size=4, world_size=2, grouped=True)
    assert 0 <= grouped_share < 0.05 < random_share


def test_accumulation_and_ranks_split_a_global_batch_into_the_same_micro_batches():
    """2 ranks x batch 2 and 1 rank x batch 2 x 2 accumulated micro-batches: the same micro-batches, in the
    order (rank 0, rank 1) = (1st, 2nd), so both layouts train on the same data at each optimiser step."""
    lengths = [(i * 37) % 23 + 5 for i in range(40)]
    has_image = [i % 5 != 0 for i in range(40)]
    one = list(Sampler(None, 2, True, lengths=lengths, has_image=has_image, seed=3,
                                                 accumulate=2, rank=0, world_size=1))
    ranks = [list(Sampler(None, 2, True, lengths=lengths, has_image=has_image, seed=3,
                                                    rank=r, world_size=2)) for r in (0, 1)]
    assert len(one) == 2 * len(ranks[0]) and one
    assert one == [batch for pair in zip(*ranks) for batch in pair]
    resumed = list(Sampler(None, 2, True, lengths=lengths, has_image=has_image, seed=3,
                                                     accumulate=2, start_batch=3, rank=0, world_size=1))
    assert resumed == one[3:]  # a resume point inside an optimiser step's micro-batches
