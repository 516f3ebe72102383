"""Packing: an optimisation of Algorithm 2's decoder that changes no loss and no gradient, only the work done.

`Llama.hidden_states` is the reference path: every decoder block runs on the whole padded (b, t, d) batch. A
training batch makes that path compute two kinds of rows whose results are thrown away or repeated:

- padding. A length-grouped batch still has pad positions after its shorter rows, and the token-wise layers
  (RMSNorms, the q/k/v/o projections, the MLPs: most of a block's work) would process them like real tokens.
  With `LlamaConfig.pack_tokens`, those layers see only the n real tokens, as (n, d).
- a shared prefix. Rows rendered with one template begin with the same system message at the same positions, and
  the decoder is causal, so that prefix has the same states in every row. With `LlamaConfig.share_prefix`, only
  row 0 keeps the prefix; rows 1.. read row 0's copy, saving (b - 1) P token-wise rows for a prefix of P tokens.
  For LLaVA the prefix stops at the first image slot: behind it each row has its own picture (`Llava.forward`).

Only attention needs whole rows. It unpacks q, k and v into the padded (b, t) layout (zeros at padding, which the
mask or causality keeps away from real rows; row 0's prefix copied into every row), attends exactly as the
reference path does, and packs its output again. Autograd sums the gradients of the prefix's copies back into row
0's, so the loss and every gradient are those of the reference path, up to float rounding (the matrix products see
other shapes): tests/test_packing.py checks this against the same batch with both switches off. Positions and the
attention mask are the reference path's; a forward with a KV cache (generation) never packs.
`benchmarks/train_step.py` times a training step with each switch off (see docs/experiments.md, "One toy-data
path; the default re-measured").

    override(cfg, {"llm.pack_tokens": False, "llm.share_prefix": False})  # the reference path only
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .llama import Attention, DecoderBlock, LlamaConfig


class Packing:
    """Where the packed rows (n, ...) of a (b, t) batch are, so that token-wise layers skip the rows in no one's
    interest: positions that `keep` marks False (padding) and, with `shared_prefix` = P > 0, the first P positions
    of rows 1.., which read row 0's instead."""

    def __init__(self, keep: torch.Tensor, shared_prefix: int = 0) -> None:
        self.b, self.t = keep.shape
        keep = keep.bool().clone()  # (b, t) positions that hold a packed row
        keep[1:, :shared_prefix] = False
        self.index = keep.flatten().nonzero().squeeze(1)  # (n,) flat positions of the packed rows
        n = self.index.numel()
        # where each (b, t) position reads its row from: its own packed row, row 0's for the shared prefix, or
        # row n (an extra zero row) for padding
        slot = torch.full((self.b * self.t,), n, dtype=torch.long, device=keep.device)
        slot[self.index] = torch.arange(n, device=keep.device)
        slot = slot.view(self.b, self.t)
        slot[1:, :shared_prefix] = slot[:1, :shared_prefix]
        self.slot = slot.flatten()

    def pack(self, x: torch.Tensor) -> torch.Tensor:  # (b, t, ...) -> (n, ...)
        return x.flatten(0, 1)[self.index]

    def unpack(self, x: torch.Tensor) -> torch.Tensor:  # (n, ...) -> (b, t, ...), zeros at padding
        padded = torch.cat([x, x.new_zeros(1, *x.shape[1:])])  # (n + 1, ...)
        return padded[self.slot].unflatten(0, (self.b, self.t))


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                         stop_id: int | None = None) -> int:
    """How many leading positions hold the same real token in every row of (b, t) `input_ids`, up to the first
    `stop_id` (an image placeholder: the same id, but each row's own picture behind it)."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(0)  # (t,)
    if attention_mask is not None:
        same &= attention_mask.bool().all(0)
    if stop_id is not None:
        same &= input_ids[0] != stop_id
    return int(same.long().cumprod(0).sum())


def plan_packing(cfg: LlamaConfig, x: torch.Tensor, input_ids: torch.Tensor | None,
                 attention_mask: torch.Tensor | None, shared_prefix: int | None) -> Packing | None:
    """The Packing for a full forward (no KV cache) of the (b, t, d) batch `x`, or None for the reference path:
    the batch has neither padding nor a shared prefix, or `cfg` switches what it has off.

    `shared_prefix`: how many leading positions every row shares, found from `input_ids` if None (0 for
    embeddings alone); ignored where `cfg.share_prefix` is off.
    """
    prefix = 0
    if cfg.share_prefix:
        if shared_prefix is None:
            shared_prefix = 0 if input_ids is None else shared_prefix_length(input_ids, attention_mask)
        prefix = shared_prefix
    padded = cfg.pack_tokens and attention_mask is not None and not bool(attention_mask.all())
    if not (prefix or padded):
        return None
    if prefix and attention_mask is not None and not bool(attention_mask[:, :prefix].all()):
        raise ValueError(f"shared_prefix={prefix}, but some row has padding in its first {prefix} positions")
    b, t, _ = x.shape
    # without pack_tokens, pad positions are packed rows like any other, as the reference path computes them
    keep = attention_mask if padded else torch.ones(b, t, dtype=torch.bool, device=x.device)
    return Packing(keep, prefix)


def packed_block(block: DecoderBlock, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 mask: torch.Tensor | None, packing: Packing) -> torch.Tensor:
    """`DecoderBlock.forward` on packed rows (n, d): the same two residual steps, norms and MLP on (n, d)."""
    x = x + packed_attention(block.self_attn, block.input_layernorm(x), cos, sin, mask, packing)
    return x + block.mlp(block.post_attention_layernorm(x))


def packed_attention(attn: Attention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     mask: torch.Tensor | None, packing: Packing) -> torch.Tensor:
    """`Attention.forward` on packed rows (n, d): projections on (n, ...), the attention itself on whole rows."""
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    q, k, v = packing.unpack(q), packing.unpack(k), packing.unpack(v)  # (b, t, ...)
    out = attn.attend(q, k, v, cos, sin, mask)  # (b, t, h e)
    return attn.o_proj(packing.pack(out))
