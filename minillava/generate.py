"""Inference (Algorithm 4): autoregressive decoding with a KV cache, greedy or temperature / top-p sampling.

Prompts are left-padded so every row's next token sits in the last column. A row stops when its decoded text
contains the template's stop string (e.g. "###") or it emits EOS; the returned text has the stop marker removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .llama import KVCache
from .model import Llava


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (b, v) -> next token ids (b,)."""
    if cfg.temperature <= 0:
        return logits.argmax(-1)  # Alg 4, line 4
    # Alg 4, line 5: temperature, nucleus, sample
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:  # nucleus: keep the smallest set of tokens whose probability mass reaches top_p
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < cfg.top_p  # always keeps the most likely token
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: Llava,
    input_ids: torch.Tensor,  # (b, t), left-padded prompts with image placeholders
    attention_mask: torch.Tensor,  # (b, t)
    tokenizer,
    stop: str,
    pixel_values: torch.Tensor | None = None,
    cfg: SamplingConfig = SamplingConfig(),
) -> list[str]:
    if bool((attention_mask[:, -1] == 0).any()):  # Alg 4, line 1
        raise ValueError("prompts must be left-padded: every row's last position must be a real token")
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(cfg.seed)
    b = input_ids.shape[0]
    # Alg 4, line 2: prefill the cache with the whole prompt, images included
    cache = KVCache(len(model.llm.layers))
    x = model.embed(input_ids, pixel_values)  # (b, t, d)
    mask = attention_mask
    logits = model.llm(inputs_embeds=x, attention_mask=mask, cache=cache)[:, -1]  # (b, v)
    generated: list[list[int]] = [[] for _ in range(b)]
    texts = [""] * b
    done = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    eos = tokenizer.eos_token_id
    for _ in range(cfg.max_new_tokens):  # Alg 4, line 3
        nxt = sample_next(logits, cfg, generator)  # (b,); Alg 4, lines 4-5
        for row in torch.nonzero(~done).flatten().tolist():
            tok = int(nxt[row])
            if tok == eos:  # Alg 4, line 6
                done[row] = True
                continue
            generated[row].append(tok)
            texts[row] = tokenizer.decode(generated[row])
            if stop and stop in texts[row]:
                texts[row] = texts[row][: texts[row].index(stop)]
                done[row] = True
        if bool(done.all()):  # Alg 4, line 7
            break
        # Alg 4, line 8: one new position per row on top of the cache
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        logits = model.llm(nxt[:, None], attention_mask=mask, cache=cache)[:, -1]
    return [t.strip() for t in texts]  # Alg 4, line 9
