"""Length-grouped batches by modality, sharded over ranks: LLaVA-1.5's `group_by_modality_length`, made resumable.

Padding a batch to its longest row wastes compute on every shorter row. Grouping rows of similar length into a
batch removes most of it (benchmarks/padding.py measures how much); grouping image and text-only rows apart, as
the official code does for LLaVA-1.5's mix665k (its ShareGPT rows have no image), keeps every batch all-image or
all-text.

One epoch's plan, the same on every rank (it depends on seed and epoch only):

1. per modality, shuffle the rows, cut them into pools of `group` global steps, sort each pool by length, and
   cut it into global steps of W * B * A rows (W ranks, per-rank batch B, A accumulated micro-batches per
   optimiser step): every step holds rows of similar length;
2. the last pool's last step may be short (`n % (W * B * A)` rows): with `drop_last` it sits out the epoch;
3. shuffle the steps of both modalities together. At each step, micro-batch m of rank r is the (m W + r)-th of
   W A contiguous slices of the step's sorted rows, so all ranks run batches of similar length at the same time,
   and a global batch splits into the same micro-batches whether W ranks or one rank accumulating W run it.

Every row appears at most once per epoch over all ranks, and every rank runs the same number of steps, `len()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, DistributedSampler, Sampler


class _EpochRelay:
    """What the batch sampler shows as its `.sampler`. Lightning's `_set_sampler_epoch` calls `set_epoch` on
    `dataloader.sampler` and on `dataloader.batch_sampler.sampler`, never on the batch sampler itself; this passes
    the call on, so the epoch Lightning counts is the one that seeds the plan."""

    def __init__(self, owner: ModalityLengthGroupedBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class ModalityLengthGroupedBatchSampler(BatchSampler):
    """Batches of one modality and similar length, the same plan on every rank, each rank its own share per step.

    `sampler` is there for Lightning: with `use_distributed_sampler=True` on a distributed run, it re-creates a
    `BatchSampler` subclass from the arguments it was built with (captured while `train_dataloader()` runs),
    with `sampler` replaced by a `DistributedSampler`. The rank and world size are read from that sampler; its
    order of indices is ignored. Otherwise they come from `rank` / `world_size`, else from torch.distributed
    when it is initialised, else 0 / 1.

    `epoch` and `start_batch` resume a run: the first pass after construction plays epoch `epoch` from its
    `start_batch`-th per-rank batch on, skipping the earlier ones without touching the data (`start_batch` >=
    `len()`: the epoch was over, the first pass plays the next one). `set_epoch` works as `DistributedSampler`'s;
    without it, each full pass moves on to the next epoch by itself.
    """

    def __init__(
        self,
        sampler: Sampler[int] | None,
        batch_size: int,
        drop_last: bool,
        *,
        lengths: Sequence[int],
        has_image: Sequence[bool] | None = None,  # None: all rows one modality
        seed: int = 0,
        group: int = 32,  # global steps per length-sorted pool
        epoch: int = 0,
        start_batch: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        accumulate: int = 1,  # micro-batches per optimiser step (the trainer's accumulate_grad_batches)
    ) -> None:
        super().__init__(range(len(lengths)), batch_size, drop_last)
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        self.accumulate = accumulate
        if has_image is not None and len(has_image) != len(lengths):
            raise ValueError(f"{len(lengths)} lengths but {len(has_image)} has_image flags")
        if group < 1 or epoch < 0 or start_batch < 0:
            raise ValueError(f"group must be >= 1, epoch and start_batch >= 0; got {group}, {epoch}, {start_batch}")
        self.rank, self.world_size = _rank_and_world(sampler, rank, world_size)
        self.sampler = _EpochRelay(self)
        self.lengths = list(lengths)
        flags = has_image if has_image is not None else [True] * len(lengths)
        self.modalities = [[i for i, f in enumerate(flags) if f], [i for i, f in enumerate(flags) if not f]]
        self.seed, self.group = seed, group
        if start_batch >= len(self) > 0:  # a checkpoint at an epoch's end: resume at the next epoch's start
            epoch, start_batch = epoch + 1, 0
        self.epoch = epoch
        self._resume: tuple[int, int] | None = (epoch, start_batch) if start_batch else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.accumulate * sum(self._steps(len(rows)) for rows in self.modalities)

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        skip = self._resume[1] if self._resume and self._resume[0] == epoch else 0
        self._resume = None  # a resume point applies to the first pass only
        a, w = self.accumulate, self.world_size
        for s, step in enumerate(self.plan(epoch)[skip // a :]):
            # micro-batch m of this rank is slice m W + r: W ranks x A accumulated micro-batches see the same
            # micro-batches in every layout of the same global batch (2 ranks, or 1 rank accumulating 2)
            for m in range(skip % a if s == 0 else 0, a):
                yield share(step, m * w + self.rank, a * w)
        self.epoch = epoch + 1

    def plan(self, epoch: int) -> list[list[int]]:
        """The epoch's global steps in order, each a list of row indices sorted by length (the same on all ranks)."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        step_size = self.world_size * self.batch_size * self.accumulate  # an optimiser step's rows
        steps: list[list[int]] = []
        for rows in self.modalities:
            if not rows:  # no draw from g: one modality on one rank plans as the former LengthGroupedBatchSampler
                continue
            order = [rows[i] for i in torch.randperm(len(rows), generator=g).tolist()]
            for start in range(0, len(order), step_size * self.group):
                pool = sorted(order[start : start + step_size * self.group], key=self.lengths.__getitem__)
                steps += [pool[i : i + step_size] for i in range(0, len(pool), step_size)]
            if len(steps[-1]) < step_size and not self._keeps_short(len(steps[-1])):
                steps.pop()  # the short step (the longest rows of the last pool) sits out this epoch
        return [steps[i] for i in torch.randperm(len(steps), generator=g).tolist()]

    def _steps(self, n: int) -> int:
        """Global steps for n rows of one modality."""
        full, rest = divmod(n, self.world_size * self.batch_size * self.accumulate)
        return full + (rest > 0 and self._keeps_short(rest))

    def _keeps_short(self, m: int) -> bool:
        """Whether a short step of m rows runs: not with drop_last, and only if every rank gets at least one row
        (every rank must run every step)."""
        return not self.drop_last and m >= self.world_size * self.accumulate


def share(step: list[int], slot: int, slots: int) -> list[int]:
    """The `slot`-th of `slots` contiguous slices of a global step (slots = ranks x accumulated micro-batches):
    B rows, or about len(step) / slots for a short step."""
    n = len(step)
    return step[slot * n // slots : (slot + 1) * n // slots]


def _rank_and_world(sampler: object, rank: int | None, world_size: int | None) -> tuple[int, int]:
    if isinstance(sampler, DistributedSampler):  # what Lightning injects
        rank, world_size = sampler.rank, sampler.num_replicas
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank() if rank is None else rank
        world_size = torch.distributed.get_world_size() if world_size is None else world_size
    rank, world_size = rank or 0, world_size or 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return rank, world_size
