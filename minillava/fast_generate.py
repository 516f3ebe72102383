"""A fast path beside Algorithm 4: the reference loop's tokens (`generate.generate`) for less work per token.

`minillava/generate.py` stays the readable reference. This module decodes the same way (the prefill is the
reference's own forward pass, the next token is `sample_next` on the last position's logits) and must give the
same tokens: tests/test_fast_generate.py checks greedy decoding against the reference at batch 1 and with left
padding, stopping at the stop string and at EOS. What it does differently, each step timed in
benchmarks/generate.py:

1. the KV cache is preallocated for prompt + answer and written in place, not grown with `torch.cat` per layer;
2. the padding mask, the positions and the rotary tables are built once for the whole answer, not every step;
3. the prefill unembeds only the last prompt position (the reference's lm_head covers every position);
4. the one-token step is written out over fused weights: q, k and v in one matrix product, gate and up in another,
   no einops parsing, rotary as one roll and three element-wise products;
5. a row's stop is checked on token ids: its text is decoded only when the new token could end the stop string,
   and then only the last few tokens (the reference decodes the whole answer every step);
6. optionally (`compile=True`), the one-token step is compiled with `torch.compile` over a fixed-size cache.

`FastGenerator(model).generate(...)` has `generate`'s arguments and result; `stream(...)` yields the answer's text
as it grows (batch 1), for `minillava chat` and the web demo.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .generate import SamplingConfig, sample_next
from .model import Llava


@dataclass
class _Layer:
    """One decoder block's weights, q/k/v and gate/up concatenated (views of nothing: copies, made once)."""

    ln1: torch.Tensor
    wqkv: torch.Tensor  # ((h + 2k) e, d)
    wo: torch.Tensor
    ln2: torch.Tensor
    wgu: torch.Tensor  # (2 f, d)
    wdown: torch.Tensor


class StopChecker:
    """Which rows have ended: EOS, or the stop string in the decoded answer, checked as the reference loop checks
    it (`stop in tokenizer.decode(answer)`) but without decoding every answer at every step.

    The stop string can first appear only when a token ending it arrives, so that token's text holds the stop's
    last character; any other token (its text decoded alone, once per vocabulary entry) cannot complete it. When
    one could, only the last `len(stop) + 1` tokens are decoded: a stop of L characters spans at most L tokens.
    """

    def __init__(self, tokenizer, stop: str, batch: int) -> None:
        self.tokenizer, self.stop, self.eos = tokenizer, stop, tokenizer.eos_token_id
        self.generated: list[list[int]] = [[] for _ in range(batch)]
        self.done = [False] * batch
        self.stopped = [False] * batch  # ended by the stop string (its text is cut there)
        self.window = len(stop) + 1
        self._may_end: dict[int, bool] = {}

    def may_end(self, tok: int) -> bool:
        if tok not in self._may_end:
            text = self.tokenizer.decode([tok])
            # '\ufffd': part of a multi-byte character, whose text shows only in context
            self._may_end[tok] = self.stop[-1] in text or "\ufffd" in text or not text
        return self._may_end[tok]

    def update(self, tokens: list[int]) -> bool:
        """Append this step's token of every running row; True once every row is done (Alg 4, lines 6-7)."""
        for row, tok in enumerate(tokens):
            if self.done[row]:
                continue
            if tok == self.eos:
                self.done[row] = True
                continue
            answer = self.generated[row]
            answer.append(tok)
            if self.stop and self.may_end(tok) and self.stop in self.tokenizer.decode(answer[-self.window:]):
                self.done[row] = self.stopped[row] = True
        return all(self.done)

    def text(self, row: int) -> str:
        """The row's answer as the reference returns it: decoded, cut at the stop string, stripped."""
        text = self.tokenizer.decode(self.generated[row])
        if self.stop and self.stop in text:
            text = text[: text.index(self.stop)]
        return text.strip()


class FastGenerator:
    """Greedy or sampled decoding of one `Llava`, with the same tokens as `generate.generate`.

    The fused weights are copies made at construction: build a new FastGenerator after changing the model's weights.
    """

    def __init__(self, model: Llava, compile: bool = False) -> None:
        self.model = model
        llm = model.llm
        cfg = llm.cfg
        self.cfg = cfg
        self.h, self.k, self.e = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.eps = cfg.norm_eps
        with torch.no_grad():
            self.layers = [
                _Layer(
                    ln1=b.input_layernorm.weight.detach(),
                    wqkv=torch.cat([b.self_attn.q_proj.weight, b.self_attn.k_proj.weight,
                                    b.self_attn.v_proj.weight]).detach(),
                    wo=b.self_attn.o_proj.weight.detach(),
                    ln2=b.post_attention_layernorm.weight.detach(),
                    wgu=torch.cat([b.mlp.gate_proj.weight, b.mlp.up_proj.weight]).detach(),
                    wdown=b.mlp.down_proj.weight.detach(),
                )
                for b in llm.layers
            ]
        self.embed = llm.embed_tokens.weight.detach()
        self.norm = llm.norm.weight.detach()
        self.lm_head = llm.lm_head.weight.detach()
        self.compiled = compile
        # compiled: attention over the whole fixed-size cache, so every step has the same shapes
        self._step = torch.compile(self._step_static, dynamic=False) if compile else self._step_sliced

    # ---------------------------------------------------------------- the one-token step
    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # RMSNorm as llama.RMSNorm computes it (fp32 statistics), in the same order, so the states agree bit for bit
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x32.to(x.dtype)

    def _block(self, x, layer: _Layer, cache_k, cache_v, p, cos, sin_signed, mask, keys: int | None):
        """One decoder block for one new position per row. x (b, 1, d); writes k, v at cache position p."""
        b = x.shape[0]
        h, k, e = self.h, self.k, self.e
        qkv = F.linear(self._rms(x, layer.ln1), layer.wqkv).view(b, h + 2 * k, e)  # (b, h + 2k, e)
        qk, v = qkv[:, : h + k], qkv[:, h + k :]
        # rotary for q and k at once: x cos + rotate_half(x) sin, rotate_half(x) sin = roll(x, e/2) [-sin, sin]
        qk = qk * cos + qk.roll(e // 2, dims=-1) * sin_signed
        q = qk[:, :h, None]  # (b, h, 1, e)
        if keys is None:  # compiled: p is a tensor (one graph for every step), written by index_copy_
            cache_k.index_copy_(2, p, qk[:, h:, None])
            cache_v.index_copy_(2, p, v[:, :, None])
        else:
            cache_k[:, :, p] = qk[:, h:]  # in place: (b, k, e) into (b, k, S, e)
            cache_v[:, :, p] = v
        kk, vv = (cache_k, cache_v) if keys is None else (cache_k[:, :, :keys], cache_v[:, :, :keys])
        att = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, enable_gqa=h != k)  # (b, h, 1, e)
        x = x + F.linear(att.reshape(b, 1, h * e), layer.wo)
        gate, up = F.linear(self._rms(x, layer.ln2), layer.wgu).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, layer.wdown)

    def _logits(self, tokens, caches, p, cos, sin_signed, mask, keys):
        x = F.embedding(tokens[:, None], self.embed)  # (b, 1, d)
        for layer, (ck, cv) in zip(self.layers, caches):
            x = self._block(x, layer, ck, cv, p, cos, sin_signed, mask, keys)
        return F.linear(self._rms(x, self.norm)[:, 0], self.lm_head)  # (b, v)

    def _step_sliced(self, tokens, caches, p: int, cos, sin_signed, mask):
        """Eager: attend to the p + 1 filled cache positions only, as the reference does."""
        return self._logits(tokens, caches, p, cos, sin_signed, None if mask is None else mask[..., : p + 1], p + 1)

    def _step_static(self, tokens, caches, p: torch.Tensor, cos, sin_signed, mask):
        """Compiled: attend to the whole cache, positions after p masked out (`mask` is then never None)."""
        return self._logits(tokens, caches, p, cos, sin_signed, mask, None)

    # ---------------------------------------------------------------- decoding
    @torch.no_grad()
    def tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               pixel_values: torch.Tensor | None = None, cfg: SamplingConfig = SamplingConfig()
               ) -> Iterator[list[int]]:
        """Yield each step's next token of every row (Alg 4, lines 3-5 and 8); the caller stops when it likes."""
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("prompts must be left-padded: every row's last position must be a real token")
        model, cfg_llm = self.model, self.cfg
        generator = None
        if cfg.seed is not None:
            generator = torch.Generator(device=input_ids.device).manual_seed(cfg.seed)
        b, t = input_ids.shape
        steps = cfg.max_new_tokens
        size = t + steps  # every position the cache will hold
        if self.compiled:  # in steps of 64, so that prompts of other lengths reuse the compiled step
            size = -(-size // 64) * 64
        # the prefill is the reference's forward pass; its cache is then copied into the preallocated one
        from .llama import KVCache

        ref = KVCache(len(model.llm.layers))
        x = model.embed(input_ids, pixel_values)
        hidden = model.llm.hidden_states(inputs_embeds=x, attention_mask=attention_mask, cache=ref)
        logits = model.llm.lm_head(hidden[:, -1])  # (b, v): the last position only
        dtype, device = hidden.dtype, hidden.device
        caches = []
        for k_past, v_past in ref.layers:
            ck = torch.zeros(b, self.k, size, self.e, dtype=dtype, device=device)
            cv = torch.zeros_like(ck)
            ck[:, :, :t], cv[:, :, :t] = k_past, v_past
            caches.append((ck, cv))
        del ref
        # positions, rotary tables and masks of every step, once
        real = attention_mask.bool()
        n_real = real.sum(-1)  # (b,)
        positions = n_real[:, None] + torch.arange(steps, device=device)  # (b, steps): as position_ids_for counts
        cos, sin = model.llm.rotary(positions)  # (b, steps, e)
        half = self.e // 2
        sin_signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        cos, sin_signed = cos.to(dtype)[:, :, None], sin_signed.to(dtype)[:, :, None]  # (b, steps, 1, e)
        padded = not bool(real.all())
        keys = torch.cat([real, torch.ones(b, size - t, dtype=torch.bool, device=device)], dim=1)  # (b, size)
        mask = keys[:, None, None, :] if padded or self.compiled else None  # (b, 1, 1, size)
        order = torch.arange(size, device=device)
        for i in range(steps):
            nxt = sample_next(logits, cfg, generator)  # (b,)
            yield nxt.tolist()
            if i + 1 == steps:
                return
            p = t + i  # the cache position of this token
            step_mask = mask
            if self.compiled:  # the whole cache: positions not yet written are masked out
                step_mask = mask & (order <= p)
                p = torch.tensor([p], device=device)
            logits = self._step(nxt, caches, p, cos[:, i], sin_signed[:, i], step_mask)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer, stop: str,
                 pixel_values: torch.Tensor | None = None, cfg: SamplingConfig = SamplingConfig()) -> list[str]:
        """`generate.generate`'s answers: decoded, cut at the stop string, stripped."""
        checker = self._run(input_ids, attention_mask, tokenizer, stop, pixel_values, cfg)
        return [checker.text(row) for row in range(input_ids.shape[0])]

    def generate_ids(self, input_ids, attention_mask, tokenizer, stop: str, pixel_values=None,
                     cfg: SamplingConfig = SamplingConfig()) -> list[list[int]]:
        """Each row's answer tokens, up to and including the token that completed the stop string (EOS left out)."""
        return self._run(input_ids, attention_mask, tokenizer, stop, pixel_values, cfg).generated

    def _run(self, input_ids, attention_mask, tokenizer, stop, pixel_values, cfg) -> StopChecker:
        checker = StopChecker(tokenizer, stop, input_ids.shape[0])
        steps = self.tokens(input_ids, attention_mask, pixel_values, cfg)
        for toks in steps:
            if checker.update(toks):
                steps.close()
                break
        return checker

    def stream(self, input_ids: torch.Tensor, tokenizer, stop: str, pixel_values: torch.Tensor | None = None,
               cfg: SamplingConfig = SamplingConfig()) -> Iterator[str]:
        """One prompt (1, t): yield the answer's new text as it grows. The pieces join to `generate`'s answer."""
        checker = StopChecker(tokenizer, stop, 1)
        shown = ""
        steps = self.tokens(input_ids, torch.ones_like(input_ids), pixel_values, cfg)
        for toks in steps:
            if checker.update(toks):
                steps.close()
                break
            text = settled(tokenizer.decode(checker.generated[0]).lstrip(), stop)
            if len(text) > len(shown) and text.startswith(shown):
                yield text[len(shown):]
                shown = text
        text = checker.text(0)  # stopped, or max_new_tokens reached
        if len(text) > len(shown) and text.startswith(shown):
            yield text[len(shown):]


def settled(text: str, stop: str) -> str:
    """The part of a growing answer that no later token can change: without a trailing half-decoded character, a
    tail that could begin the stop string, and trailing spaces (which the finished answer strips)."""
    text = text.rstrip("\ufffd")
    for m in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:m]):
            text = text[:-m]
            break
    return text.rstrip()


def generate_fast(model: Llava, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer, stop: str,
                  pixel_values: torch.Tensor | None = None, cfg: SamplingConfig = SamplingConfig()) -> list[str]:
    """`generate.generate` through the fast path (builds the fused weights each call; keep a FastGenerator to
    decode many batches)."""
    return FastGenerator(model).generate(input_ids, attention_mask, tokenizer, stop, pixel_values, cfg)
