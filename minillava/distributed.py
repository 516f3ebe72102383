"""Sharded training (FSDP2) of a LLaVA: what `LlavaModule.configure_model` does under Lightning's
`ModelParallelStrategy`, and the collectives that move whole state dicts in and out of the shards.

The recipe of the paper's stage 2 (Vicuna-13B on 8 GPUs, FSDP full shard, bf16) in FSDP2 terms:
- every decoder block of the LLM, every block of the frozen CLIP tower, the token embedding and the unembedding
  are `fully_shard` units: each rank keeps 1/N of their parameters and gathers one unit at a time for compute;
- the root unit holds the rest (the projector W, the final norm, the tower's stem), so they shard too;
- the frozen tower's parameters have `requires_grad=False`: the optimiser, built over trainable parameters only,
  keeps no state for them;
- `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)` for `precision="bf16-mixed"`: fp32 master shards,
  bf16 compute copies, gradients reduced in fp32.

The model is built on the meta device and sharded before any memory is allocated; `load_full_state` then fills
the shards from one whole state dict that only rank 0 holds (read lazily from the checkpoint files), so a 13B
model is never in memory twice, and never once per rank.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from .llama import RotaryEmbedding
from .model import Llava


def sharding_units(model: Llava) -> list[nn.Module]:
    """The modules that become their own FSDP2 unit, innermost first; the root (the whole model) comes last."""
    units: list[nn.Module] = [*model.vision.visual.transformer.resblocks, *model.llm.layers,
                              model.llm.embed_tokens, model.llm.lm_head]
    return units + [model]


def shard_llava(model: Llava, mesh, param_dtype: torch.dtype | None = None) -> Llava:
    """Apply `fully_shard` to every unit of `sharding_units` over the 1-D data-parallel `mesh`, in place.

    Each unit must be *called* as a module for FSDP's hooks to gather it: `Llama.hidden_states` calls each block
    (packed or not) through `block(...)`, never through its submodules.
    """
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for unit in sharding_units(model):
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    return model


def is_sharded(module: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in module.parameters())


def load_full_state(model: nn.Module, state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Materialise a sharded meta-device `model` on `device` and fill it from the whole `state`, which rank 0 holds
    (other ranks pass {}): rank 0 broadcasts one tensor at a time and each rank keeps its shard."""
    model.to_empty(device=device)
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True,
                                                                strict=True))
    for module in model.modules():  # the rotary tables, which no state dict carries
        if isinstance(module, RotaryEmbedding):
            module.reset_parameters()


def full_state(module: nn.Module, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """The whole state dict of `module` (sharded or not) on the CPU, restricted to `keys` if given.

    Sharded: a collective that every rank must call. The whole model arrives on rank 0 only (others get {}), one
    unit at a time, so no GPU holds it whole; `keys` arrive on every rank (the projector: 5M parameters, not 13B).
    """
    wanted = None if keys is None else set(keys)
    if not is_sharded(module):
        return {k: v.detach().cpu() for k, v in module.state_dict().items() if wanted is None or k in wanted}
    if wanted is None:
        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    out = {}
    for name, tensor in module.state_dict().items():  # DTensor shards
        if name in wanted:
            out[name] = (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().cpu()
    return out
