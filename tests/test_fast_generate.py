"""The fast path (minillava/fast_generate.py) gives the reference loop's tokens (minillava/generate.py)."""

from __future__ import annotations

import random

import pytest
import torch

from minillava.constants import IMAGE_TOKEN
from minillava.conversation import Example, pad_batch
from minillava.fast_generate import FastGenerator, StopChecker, generate_fast, settled
from minillava.generate import SamplingConfig, generate
from minillava.model import Llava, llava_preset, override


def model_for(tokenizer, boost: dict[int, int] | None = None, **overrides) -> Llava:
    """A 2-layer toy Llava over `tokenizer`, seeded; `boost` {token: seed}: tokens given a fresh, larger unembedding
    row (drawn with that seed), so that some greedy answers reach them within a few steps."""
    cfg = override(llava_preset("toy"), {"llm.vocab_size": len(tokenizer), "llm.n_layers": 2,
                                         "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), **overrides})
    torch.manual_seed(0)
    model = Llava(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # norms away from 1: less uniform states
            if "norm" in name or "ln_" in name:
                p.uniform_(0.5, 1.5)
        for tok, seed in (boost or {}).items():
            row = torch.randn(model.cfg.llm.d_model, generator=torch.Generator().manual_seed(seed))
            model.llm.lm_head.weight[tok] = 0.05 * row
    return model


def prompts(tokenizer, model: Llava, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Left-padded prompts of random text tokens with one image's placeholders each."""
    g = torch.Generator().manual_seed(seed)
    n, image_id = model.cfg.num_image_tokens, model.cfg.image_token_id
    low = max(tokenizer.all_special_ids) + 1
    examples = []
    for length in lengths:
        ids = torch.randint(low, len(tokenizer) - 1, (length,), generator=g)
        ids[2 : 2 + n] = image_id
        examples.append(Example(ids, ids))
    batch = pad_batch(examples, tokenizer.pad_token_id, side="left")
    batch["pixel_values"] = torch.randn(len(lengths), 3, 32, 32, generator=g)
    return batch


def both(model, tokenizer, batch, stop="###", cfg=SamplingConfig(max_new_tokens=24)):
    args = (batch["input_ids"], batch["attention_mask"], tokenizer, stop, batch["pixel_values"], cfg)
    return generate(model, *args), FastGenerator(model).generate(*args)


def test_greedy_batch_1_is_the_reference(tokenizer):
    model = model_for(tokenizer)
    batch = prompts(tokenizer, model, [40])
    ref, fast = both(model, tokenizer, batch, cfg=SamplingConfig(max_new_tokens=40))
    assert fast == ref and ref[0]
    assert generate_fast(model, batch["input_ids"], batch["attention_mask"], tokenizer, "###", batch["pixel_values"],
                         SamplingConfig(max_new_tokens=40)) == ref


def test_left_padded_batch_stops_at_the_stop_string_and_eos_like_the_reference(tokenizer):
    stop_id, eos = tokenizer.convert_tokens_to_ids("###"), tokenizer.eos_token_id
    cfg = SamplingConfig(max_new_tokens=30)
    seen = set()
    for seed in range(12):  # models whose answers end in each way: the stop string, EOS, the length limit
        model = model_for(tokenizer, boost={stop_id: 2 * seed, eos: 2 * seed + 1})
        batch = prompts(tokenizer, model, [30, 45, 22, 38, 41, 27, 33, 50], seed=seed)
        ref, fast = both(model, tokenizer, batch, cfg=cfg)
        assert fast == ref
        ids = FastGenerator(model).generate_ids(batch["input_ids"], batch["attention_mask"], tokenizer, "###",
                                                batch["pixel_values"], cfg)
        seen |= {"stop" if row and row[-1] == stop_id else "eos" if len(row) < cfg.max_new_tokens else "length"
                 for row in ids}
        if seen == {"stop", "eos", "length"}:
            break
    assert seen == {"stop", "eos", "length"}, seen  # the test reached every way of stopping


def test_grouped_query_attention_and_no_image(tokenizer):
    model = model_for(tokenizer, **{"llm.n_kv_heads": 2})
    batch = prompts(tokenizer, model, [20, 26])
    ids = batch["input_ids"].masked_fill(batch["input_ids"] == model.cfg.image_token_id, 7)
    args = (ids, batch["attention_mask"], tokenizer, "###", None, SamplingConfig(max_new_tokens=20))
    assert FastGenerator(model).generate(*args) == generate(model, *args)


def test_sampling_with_a_seed_draws_the_reference_tokens(tokenizer):
    model = model_for(tokenizer)
    batch = prompts(tokenizer, model, [30, 36], seed=2)
    cfg = SamplingConfig(max_new_tokens=20, temperature=0.8, top_p=0.9, seed=3)
    ref, fast = both(model, tokenizer, batch, cfg=cfg)
    assert fast == ref


@pytest.mark.parametrize("stop", ["###", " the", "e", "ab"])
def test_stop_checks_on_token_ids_agree_with_decoding_the_whole_answer(tokenizer, stop):
    """The reference decodes the whole answer at every step; the checker decodes a short tail, and only after a
    token that could end the stop string. Both must stop at the same step with the same text."""
    rng = random.Random(0)
    vocab = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids] + [tokenizer.eos_token_id]
    for _ in range(200):
        seq = [rng.choice(vocab) for _ in range(rng.randint(1, 25))]
        checker = StopChecker(tokenizer, stop, 1)
        ref_answer, ref_end = [], None
        for step, tok in enumerate(seq):
            if tok == tokenizer.eos_token_id:
                ref_end = step
                break
            ref_answer.append(tok)
            if stop in tokenizer.decode(ref_answer):
                ref_end = step
                break
        ends = [step for step, tok in enumerate(seq) if checker.update([tok])]
        assert (ends[0] if ends else None) == ref_end
        text = tokenizer.decode(ref_answer)
        assert checker.text(0) == (text[: text.index(stop)] if stop in text else text).strip()


def test_stream_pieces_join_to_the_answer(tokenizer):
    stop_id = tokenizer.convert_tokens_to_ids("###")
    model = model_for(tokenizer, boost={stop_id: 5})
    for seed in range(3):
        batch = prompts(tokenizer, model, [30 + seed], seed=seed)
        cfg = SamplingConfig(max_new_tokens=30)
        ref = generate(model, batch["input_ids"], batch["attention_mask"], tokenizer, "###", batch["pixel_values"],
                       cfg)
        pieces = list(FastGenerator(model).stream(batch["input_ids"], tokenizer, "###", batch["pixel_values"], cfg))
        assert "".join(pieces) == ref[0]
        assert all(pieces)


def test_settled_holds_back_what_could_still_change():
    assert settled("a red #", "###") == "a red"
    assert settled("a red ##", "###") == "a red"
    assert settled("two\ufffd", "###") == "two"
    assert settled("one. ", "###") == "one."


def test_right_padding_is_refused(tokenizer):
    model = model_for(tokenizer)
    batch = prompts(tokenizer, model, [20, 26])
    mask = batch["attention_mask"].flip(1)
    with pytest.raises(ValueError, match="left-padded"):
        FastGenerator(model).generate(batch["input_ids"], mask, tokenizer, "###", batch["pixel_values"])


@pytest.mark.slow
def test_compiled_step_gives_the_reference_tokens(tokenizer):
    model = model_for(tokenizer, boost={tokenizer.convert_tokens_to_ids("###"): 5})
    batch = prompts(tokenizer, model, [30, 41, 25], seed=4)
    args = (batch["input_ids"], batch["attention_mask"], tokenizer, "###", batch["pixel_values"],
            SamplingConfig(max_new_tokens=24))
    assert FastGenerator(model, compile=True).generate(*args) == generate(model, *args)
