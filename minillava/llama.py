"""A LLaMA decoder in plain PyTorch + einops (the language model of LLaVA, Vicuna = LLaMA).

Pre-norm decoder blocks with RMSNorm, rotary position embeddings, SwiGLU MLP, no biases and untied input/output
embeddings. Module names mirror transformers' `LlamaForCausalLM` (`embed_tokens`, `layers.N.self_attn.q_proj`,
`norm`, `lm_head`, ...) so HF checkpoints map onto this model key by key, and rotary embeddings use HF's
"rotate half" layout for the same reason.

Shapes: b batch, t query positions, s key positions (cache + new), d model width, h heads, k key/value heads,
e head width, v vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from .constants import IGNORE_INDEX
from .packing import Packing, packed_block, plan_packing


@dataclass
class LlamaConfig:
    vocab_size: int = 32000
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None: multi-head attention; fewer: grouped-query attention
    ffn_dim: int = 11008
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    # speed only, the same loss and gradients (minillava/packing.py): token-wise layers skip padding, and a prefix
    # that every row of a batch shares (the system message) is computed once. Both False: the reference path only
    pack_tokens: bool = True
    share_prefix: bool = True

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


LLAMA_PRESETS: dict[str, LlamaConfig] = {
    "vicuna-7b": LlamaConfig(d_model=4096, n_layers=32, n_heads=32, ffn_dim=11008),
    "vicuna-13b": LlamaConfig(d_model=5120, n_layers=40, n_heads=40, ffn_dim=13824),
    "toy": LlamaConfig(vocab_size=1024, d_model=128, n_layers=4, n_heads=4, ffn_dim=344, max_seq_len=512),
}


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * g, computed in fp32 as LLaMA does."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)  # Alg 6, line 1
        return self.weight * x32.to(x.dtype)  # Alg 6, line 2


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary position embeddings, evaluated at arbitrary position ids."""

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self) -> torch.Tensor:
        # Alg 7, line 1: omega_i = theta^(-2(i-1)/e)
        return 1.0 / self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim)  # (e/2,)

    def reset_parameters(self) -> None:
        """Recompute the table (no state dict carries it), e.g. after meta-device construction or `to_empty`; a
        table on the meta device comes back on the CPU."""
        device = self.inv_freq.device
        self.inv_freq = self._inv_freq().to("cpu" if device.type == "meta" else device)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: (b, t) -> cos, sin: (b, t, e); HF layout: the two halves repeat the same frequencies
        angles = position_ids.float()[..., None] * self.inv_freq  # (b, t, e/2)
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()  # Alg 7, line 2


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)  # Alg 7, line 3


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (b, h, t, e); cos, sin: (b, t, e) -> broadcast over heads
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    return x * cos + rotate_half(x) * sin  # Alg 7, line 4


class KVCache:
    """Keys and values of past positions, one (k, v) pair per layer, each (b, k, s, e)."""

    def __init__(self, n_layers: int) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        past = self.layers[layer]
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        self.layers[layer] = (k, v)
        return k, v


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,  # (b, t, d)
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,  # (b, 1, t, s) bool, True = may attend; None = plain causal
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # Alg 8, line 1
        return self.o_proj(self.attend(q, k, v, cos, sin, mask, cache, layer))  # Alg 8, line 7

    def attend(self, q, k, v, cos, sin, mask, cache=None, layer=0) -> torch.Tensor:
        """The attention itself, on projected rows: q (b, t, h e), k and v (b, t, k e) -> (b, t, h e)."""
        q = rearrange(q, "b t (h e) -> b h t e", h=self.n_heads)
        k = rearrange(k, "b t (k e) -> b k t e", k=self.n_kv_heads)
        v = rearrange(v, "b t (k e) -> b k t e", k=self.n_kv_heads)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # Alg 8, line 2
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (b, k, s, e); Alg 8, line 3
        # Alg 8, line 4: grouped-query attention, each k/v head serves h/k query heads
        if self.n_kv_heads != self.n_heads:
            k = repeat(k, "b k s e -> b (k g) s e", g=self.n_heads // self.n_kv_heads)
            v = repeat(v, "b k s e -> b (k g) s e", g=self.n_heads // self.n_kv_heads)
        # Alg 8, lines 5-6: softmax(Q K^T / sqrt(e) + mask) V, fused by SDPA
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return rearrange(out, "b h t e -> b t (h e)")


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.silu(self.gate_proj(x)) * self.up_proj(x)  # Alg 9, line 1
        return self.down_proj(a)  # Alg 9, line 2


class DecoderBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache=None, layer=0, packing: Packing | None = None):
        if packing is not None:  # x holds packed rows (n, d): the same block, skipping padding (packing.py)
            return packed_block(self, x, cos, sin, mask, packing)
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)  # Alg 10, line 1
        return x + self.mlp(self.post_attention_layernorm(x))  # Alg 10, lines 2-3


def attention_mask_4d(attention_mask: torch.Tensor, t: int) -> torch.Tensor:
    """(b, s) padding mask (1 = real token) -> (b, 1, t, s) bool mask, causal over the last t positions.

    A padding query row would attend to nothing, and softmax over nothing is NaN; we let every position see itself
    so pad rows stay finite (their outputs are never used).
    """
    s = attention_mask.shape[1]
    keys = attention_mask.bool()[:, None, None, :]  # (b, 1, 1, s)
    q_pos = torch.arange(s - t, s, device=attention_mask.device)[:, None]  # (t, 1)
    k_pos = torch.arange(s, device=attention_mask.device)[None, :]  # (1, s)
    causal = k_pos <= q_pos  # (t, s)
    return (keys & causal) | (k_pos == q_pos)


def _right_padded(attention_mask: torch.Tensor) -> bool:
    """True if every row is real tokens then padding. Causal attention alone is then exact for the real
    positions (pads come after them), so training batches can take SDPA's fast is_causal path."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


def position_ids_for(attention_mask: torch.Tensor | None, b: int, t: int, past: int,
                     device: torch.device) -> torch.Tensor:
    """(b, t) positions of the t new tokens: with a padding mask (b, s), each row counts its own real tokens, so
    left padding shifts nothing; without one, positions run on from the `past` positions in the cache."""
    if attention_mask is not None:  # Alg 2, line 5: count real tokens so each row starts at position 0
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
    return torch.arange(past, past + t, device=device).expand(b, t)


def decoder_mask(attention_mask: torch.Tensor | None, b: int, t: int, past: int,
                 device: torch.device) -> torch.Tensor | None:
    """The causal and padding mask in the form SDPA takes: None = plain causal (SDPA's fast is_causal path), else
    an explicit (b, 1, t, s) bool mask."""
    padded = attention_mask is not None and not bool(attention_mask.all())
    if padded and not (past == 0 and _right_padded(attention_mask)):
        return attention_mask_4d(attention_mask, t)  # Alg 2, line 6
    if past and t > 1:  # prefill on top of a cache: causal offset that is_causal cannot express
        return attention_mask_4d(torch.ones(b, past + t, dtype=torch.bool, device=device), t)
    return None


class Llama(nn.Module):
    """LLaMA causal language model: token ids or embeddings in, next-token logits out."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        # recompute each block's activations in the backward pass instead of keeping them (training.py sets it):
        # memory per block drops to its input, for one more forward of the decoder
        self.activation_checkpointing = False
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,  # (b, t)
        inputs_embeds: torch.Tensor | None = None,  # (b, t, d)
        attention_mask: torch.Tensor | None = None,  # (b, s), 1 = real token, covers cache + new positions
        position_ids: torch.Tensor | None = None,  # (b, t)
        cache: KVCache | None = None,
    ) -> torch.Tensor:  # logits (b, t, v)
        # Alg 2, line 9: untied unembedding
        return self.lm_head(self.hidden_states(input_ids, inputs_embeds, attention_mask, position_ids, cache))

    def hidden_states(self, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None, cache=None,
                      shared_prefix: int | None = None):
        """Algorithm 2, lines 5-8: the final hidden states (b, t, d) of token ids or of embeddings (LLaVA's, with
        the visual tokens spliced in). With a `cache` (generation) only the new positions are computed, and
        `attention_mask` covers the cached ones too.

        A full forward of a batch with padding, or with a prefix that every row shares, takes the packed path
        instead of the loop below: the same states at every real position for less work (minillava/packing.py;
        switched by `LlamaConfig.pack_tokens` and `share_prefix`). `shared_prefix`: that prefix's length, found
        from `input_ids` if not given.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (b, t, d); Alg 5, line 1
        b, t, _ = x.shape
        past = 0 if cache is None else cache.length
        if position_ids is None:
            position_ids = position_ids_for(attention_mask, b, t, past, x.device)  # Alg 2, line 5
        cos, sin = self.rotary(position_ids)
        mask = decoder_mask(attention_mask, b, t, past, x.device)  # Alg 2, line 6
        # the optimisation, in its own module: skip padding, compute a shared prefix once (never with a cache)
        packing = plan_packing(self.cfg, x, input_ids, attention_mask, shared_prefix) if cache is None else None
        if packing is not None:
            x = packing.pack(x)  # (n, d): the real rows only
        for i, block in enumerate(self.layers):
            x = self._block(block, x, cos, sin, mask, cache, i, packing)  # Alg 2, line 7
        x = self.norm(x)  # Alg 2, line 8
        return x if packing is None else packing.unpack(x)  # (b, t, d), zeros at padding

    def _block(self, block, x, cos, sin, mask, cache, i, packing):
        """One decoder block, called as a module (so FSDP's hooks gather its shards), checkpointed if switched on."""
        if self.activation_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, cos, sin, mask, cache, i, packing, use_reentrant=False)
        return block(x, cos, sin, mask, cache, i, packing)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _supervised_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels are unshifted with IGNORE_INDEX where unsupervised: row t predicts labels[t + 1]. Returns the targets
    (b, t-1) and which of them are supervised."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    if not bool(keep.any()):
        raise ValueError(f"batch has no supervised tokens (every label is {IGNORE_INDEX})")
    return targets, keep


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the supervised targets.

    Alg 2, line 10: the mean over supervised targets y_{t+1} of -log softmax(Λ[t])[y_{t+1}].
    """
    targets, keep = _supervised_targets(labels)
    return F.cross_entropy(logits[:, :-1][keep].float(), targets[keep])  # (n, v) rows of supervised positions


def supervised_lm_loss(hidden: torch.Tensor, lm_head: nn.Linear, labels: torch.Tensor) -> torch.Tensor:
    """The same loss from the final hidden states (b, t, d), unembedding only the rows whose next token is
    supervised. In LLaVA most rows are visual tokens, system text and questions (stage 1: all but a short caption),
    so training skips most of the (t, d) x (d, v) product and its softmax; value and gradients are unchanged.
    """
    targets, keep = _supervised_targets(labels)
    logits = lm_head(hidden[:, :-1][keep]).float()  # (n, v); Alg 2, lines 9-10 on supervised rows only
    return F.cross_entropy(logits, targets[keep])

