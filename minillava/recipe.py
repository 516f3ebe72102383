"""The paper's training recipes as data, and a callback that holds a run to the recipe's global batch.

The global batch is what the recipes fix (LLaVA v1: 128 in stage 1, 32 in stage 2; LLaVA-1.5: 256 and 128); how it
splits into GPUs x per-GPU batch x gradient accumulation is the user's choice for their hardware:

    global batch = data-parallel size (devices x num_nodes, with no tensor parallelism)
                   x per-device batch (data.batch_size) x accumulate_grad_batches

`GlobalBatch` (in each paper config's `trainer.callbacks`) checks that product when fit starts and refuses a run
that silently trains another recipe, e.g. `--trainer.devices 4` without doubling the accumulation. Switch it to a
warning with `strict: false` in the config (or edit `global_batch` to train a different recipe on purpose).
`minillava plan` uses `accumulation_for` to pick the accumulation that keeps the recipe's batch on other hardware.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import lightning as L


@dataclass(frozen=True)
class Recipe:
    """One stage of a published recipe (shared/facts.md; official scripts for LLaVA-1.5)."""

    name: str
    data: str  # the released training file
    samples: int  # records in it (rounded as the papers report them)
    epochs: int
    lr: float
    global_batch: int
    template: str
    # mean tokens per record (visual tokens included): our ESTIMATE for time plans, not a published figure.
    # Length-grouped batches carry little padding, so compute follows the mean, not max_len
    mean_tokens: int
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_len: int = 2048
    reported_hours: float | None = None  # the paper's training time for the 13B model on 8 x A100


RECIPES: dict[tuple[str, int], Recipe] = {
    # LLaVA v1 (the paper): 256 visual tokens; v0 template with a system message
    # 256 visual tokens + system message, a brief instruction, a caption
    ("llava-v1", 1): Recipe("LLaVA v1 stage 1: feature alignment", "CC3M-595K chat.json", 595_000, 1, 2e-3, 128,
                            "v0", mean_tokens=320, reported_hours=4),
    ("llava-v1", 2): Recipe("LLaVA v1 stage 2: end-to-end fine-tuning", "llava_instruct_158k.json", 158_000, 3,
                            2e-5, 32, "v0", mean_tokens=600, reported_hours=10),  # 256 visual + multi-turn answers
    # LLaVA-1.5 (official scripts/v1_5/pretrain.sh, finetune.sh): 576 visual tokens
    ("llava-1.5", 1): Recipe("LLaVA-1.5 stage 1: feature alignment (plain)", "blip_laion_cc_sbu_558k.json",
                             558_000, 1, 1e-3, 256, "plain", mean_tokens=600),  # 576 visual + a short caption
    ("llava-1.5", 2): Recipe("LLaVA-1.5 stage 2: visual instruction tuning", "llava_v1_5_mix665k.json", 665_000, 1,
                             2e-5, 128, "v1", mean_tokens=800),  # 576 visual + VQA turns; some text-only records
}


def recipe_for(preset: str, stage: int) -> Recipe | None:
    """The recipe that a model preset ("llava-v1-13b", "llava-1.5-7b", ...) trains with in `stage`, if published."""
    family = "llava-1.5" if preset.startswith("llava-1.5") else "llava-v1" if preset.startswith("llava-v1") else None
    return RECIPES.get((family, stage)) if family else None


def global_batch_size(devices: int, num_nodes: int, batch_size: int, accumulate: int) -> int:
    """Samples per optimiser step: every data-parallel rank's micro-batches, summed over the accumulation."""
    for name, value in (("devices", devices), ("num_nodes", num_nodes), ("batch_size", batch_size),
                        ("accumulate", accumulate)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    return devices * num_nodes * batch_size * accumulate


def accumulation_for(global_batch: int, devices: int, num_nodes: int, batch_size: int) -> int:
    """The gradient accumulation that makes devices x num_nodes x batch_size x accumulation = global_batch."""
    per_step = global_batch_size(devices, num_nodes, batch_size, 1)
    if global_batch % per_step:
        raise ValueError(
            f"global batch {global_batch} is not a multiple of devices {devices} x num_nodes {num_nodes} x "
            f"batch_size {batch_size} = {per_step}: choose a per-device batch (or device count) that divides it"
        )
    return global_batch // per_step


def data_parallel_size(trainer: L.Trainer) -> int:
    """Ranks that see different data: the world size, less any tensor parallelism (ModelParallelStrategy's mesh)."""
    try:
        return int(trainer.strategy.distributed_sampler_kwargs["num_replicas"])
    except (AttributeError, KeyError, RuntimeError, TypeError):  # one device, or no mesh yet
        return trainer.world_size


class GlobalBatch(L.Callback):
    """Checks at the start of fit that the run trains with the recipe's global batch (see the module docstring)."""

    def __init__(self, global_batch: int, strict: bool = True) -> None:
        if global_batch < 1:
            raise ValueError(f"global_batch must be at least 1, got {global_batch}")
        self.global_batch, self.strict = global_batch, strict

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        batch_size = getattr(getattr(datamodule, "hparams", None), "batch_size", None)
        if batch_size is None:
            batch_size = getattr(datamodule, "batch_size", None)
        if batch_size is None:
            warnings.warn("GlobalBatch: no datamodule with a batch_size, so the global batch cannot be checked")
            return
        check_global_batch(self.global_batch, data_parallel_size(trainer), int(batch_size),
                           trainer.accumulate_grad_batches, self.strict)


def check_global_batch(recipe: int, data_parallel: int, batch_size: int, accumulate: int, strict: bool = True) -> int:
    """Raise (or warn, not strict) when data_parallel x batch_size x accumulate differs from the recipe's batch."""
    actual = data_parallel * batch_size * accumulate
    if actual != recipe:
        hint = ""
        if recipe % (data_parallel * batch_size) == 0:
            hint = (f"; with these devices and batch, set "
                    f"--trainer.accumulate_grad_batches {recipe // (data_parallel * batch_size)}")
        msg = (f"global batch {actual} = data-parallel devices {data_parallel} (devices x num_nodes) x "
               f"data.batch_size {batch_size} x trainer.accumulate_grad_batches {accumulate}, but the recipe's "
               f"global batch is {recipe}{hint} (or set strict: false on the GlobalBatch callback to train anyway)")
        if strict:
            raise ValueError(msg)
        warnings.warn(msg)
    return actual
