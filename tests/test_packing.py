"""Packing (minillava/packing.py): skipping padding and computing a shared prefix once change no loss, logit or
gradient, and `LlamaConfig.pack_tokens` / `share_prefix` switch them off."""

from __future__ import annotations

import pytest
import torch
from tiny_llava import tiny_llava

import minillava.llama
from minillava.llama import KVCache, Llama, LlamaConfig
from minillava.packing import Packing, shared_prefix_length

SWITCHES = [(True, True), (True, False), (False, True)]  # (pack_tokens, share_prefix); both False: the reference


@pytest.fixture
def packed_calls(monkeypatch) -> list[int]:
    """Counts the forwards that take the packed path, so a test can tell that a switch switched something."""
    calls = []
    plan = minillava.llama.plan_packing

    def counting(*args, **kwargs):
        packing = plan(*args, **kwargs)
        if packing is not None:
            calls.append(1)
        return packing

    monkeypatch.setattr(minillava.llama, "plan_packing", counting)
    return calls


def switch(cfg: LlamaConfig, pack_tokens: bool, share_prefix: bool) -> None:
    cfg.pack_tokens, cfg.share_prefix = pack_tokens, share_prefix


def batch_with_a_system_prefix(image_id: int, padding: str):
    """3 rows that begin with the same 7 tokens, then an image, then their own text; right or left padded."""
    torch.manual_seed(1)
    ids = torch.randint(5, 64, (3, 40))
    ids[:, :7] = ids[0, :7]  # the same "system message" in every row
    ids[:, 8:24] = image_id  # then an image, whose visual tokens differ per row
    mask = torch.ones_like(ids)
    if padding == "right":  # as in training
        mask[1, 30:], mask[2, 35:] = 0, 0
    else:  # as in generation's prompts
        mask[1, :3], mask[2, :5] = 0, 0
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    labels[:, :24] = -100
    return ids, mask, labels


def test_pack_and_unpack_skip_padding_and_give_every_row_row_0s_prefix():
    keep = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    packing = Packing(keep, shared_prefix=2)
    x = torch.arange(15.0).view(3, 5, 1)
    packed = packing.pack(x)
    assert packed.shape == (4 + 1 + 3, 1)  # row 0's 4 real tokens; rows 1 and 2 without the prefix
    expected = x * keep[..., None]  # zeros at padding
    expected[1:, :2] = x[0, :2]  # the prefix: row 0's copy
    assert torch.equal(packing.unpack(packed), expected)


def test_shared_prefix_length_stops_at_the_first_difference_padding_or_image_slot():
    ids = torch.tensor([[1, 2, 3, 4, 9, 9], [1, 2, 3, 5, 9, 0]])
    assert shared_prefix_length(ids, None) == 3
    assert shared_prefix_length(ids, None, stop_id=3) == 2  # the image slot: same id, different pictures
    mask = torch.ones_like(ids)
    mask[1, 1:] = 0
    assert shared_prefix_length(ids, mask) == 1
    assert shared_prefix_length(ids[:1], None) == 0  # one row: nothing to share


def test_a_shared_system_prefix_is_computed_once_with_the_same_loss_and_gradients():
    model = tiny_llava()
    ids, mask, labels = batch_with_a_system_prefix(model.cfg.image_token_id, "right")
    pixels = torch.randn(3, 3, 32, 32)
    assert shared_prefix_length(ids, mask, model.cfg.image_token_id) == 7  # < 8: row 0 may differ at 7 by chance
    runs = []
    for share in (True, False):
        model.cfg.llm.share_prefix = share  # False: the same batch with every row computing its own prefix
        model.zero_grad()
        out = model(ids, pixels, attention_mask=mask, labels=labels)
        out["loss"].backward()
        runs.append([out["loss"].detach(), out["logits"][mask.bool()].detach()]
                    + [p.grad.clone() for p in model.parameters() if p.grad is not None])
    for shared, separate in zip(*runs):
        torch.testing.assert_close(shared, separate, atol=1e-5, rtol=1e-4)
    # the text-only LLM finds the prefix from its ids itself; padding inside a claimed prefix is refused
    model.cfg.llm.share_prefix = True
    logits = model.llm(ids, attention_mask=mask)
    torch.testing.assert_close(logits[1, :30], model.llm(ids[1:, :30])[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="padding in its first 40"):
        model.llm.hidden_states(ids, attention_mask=mask, shared_prefix=40)
    model.cfg.llm.share_prefix = False  # switched off, a claimed prefix is not used, so not checked
    model.llm.hidden_states(ids, attention_mask=mask, shared_prefix=40)


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("pack_tokens,share_prefix", SWITCHES)
def test_switching_packing_off_changes_no_loss_logit_or_gradient(pack_tokens, share_prefix, padding, packed_calls):
    model = tiny_llava(**{"llm.n_kv_heads": 2, "projector": "mlp2x_gelu"})  # grouped-query attention too
    ids, mask, labels = batch_with_a_system_prefix(model.cfg.image_token_id, padding)
    pixels = torch.randn(3, 3, 32, 32)
    runs = []
    for switches in ((pack_tokens, share_prefix), (False, False)):  # the optimisation, then the reference path
        switch(model.cfg.llm, *switches)
        for return_logits in (True, False):  # evaluation and training
            model.zero_grad()
            out = model(ids, pixels, attention_mask=mask, labels=labels, return_logits=return_logits)
            out["loss"].backward()
            runs.append([out["loss"].detach()] + ([out["logits"][mask.bool()].detach()] if return_logits else [])
                        + [p.grad.clone() for p in model.parameters() if p.grad is not None])
    # the prefix is shared only in right-padded rows: left padding puts pads in front of it
    packs = pack_tokens or (share_prefix and padding == "right")
    assert len(packed_calls) == 2 * packs  # the switches chose the path: packed only where they should
    for optimised, reference in zip(runs[:2], runs[2:]):
        assert len(optimised) == len(reference)
        for a, b in zip(optimised, reference):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pack_tokens,share_prefix", SWITCHES)
def test_the_text_only_llm_packs_with_the_same_logits_and_gradients(pack_tokens, share_prefix, packed_calls):
    torch.manual_seed(0)
    llm = Llama(LlamaConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64))
    ids = torch.randint(0, 50, (3, 12))
    ids[:, :4] = ids[0, :4]  # a prefix that every row shares, found from the ids
    mask = torch.ones_like(ids)
    mask[1, 9:], mask[2, 6:] = 0, 0
    runs = []
    for switches in ((pack_tokens, share_prefix), (False, False)):
        switch(llm.cfg, *switches)
        llm.zero_grad()
        logits = llm(ids, attention_mask=mask)[mask.bool()]  # real positions only: packing zeroes padding
        (logits.float() ** 2).mean().backward()
        runs.append([logits.detach()] + [p.grad.clone() for p in llm.parameters()])
    assert len(packed_calls) == 1
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_generation_with_a_kv_cache_never_packs(packed_calls):
    torch.manual_seed(0)
    llm = Llama(LlamaConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, ffn_dim=64)).eval()
    ids = torch.randint(0, 50, (2, 10))
    ids[1, :6] = ids[0, :6]
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left-padded prompts
    with torch.no_grad():
        full = llm(ids, attention_mask=mask)
        assert len(packed_calls) == 1  # a full forward of a padded batch packs
        cache = KVCache(2)
        steps = [llm(ids[:, :6], attention_mask=mask[:, :6], cache=cache)]
        steps += [llm(ids[:, i : i + 1], attention_mask=mask[:, : i + 1], cache=cache) for i in range(6, 10)]
    assert len(packed_calls) == 1  # prefill and decoding with a cache take the reference path
    torch.testing.assert_close(torch.cat(steps, 1)[mask.bool()], full[mask.bool()], atol=1e-5, rtol=1e-5)


def test_llava_decodes_a_batch_on_a_kv_cache_like_a_full_forward():
    """Prefill, then one token at a time, for 2 rows with the same system text: the cache path computes no shared
    prefix (its ids and mask cover different positions) and gives the full forward's logits."""
    model = tiny_llava()
    n = model.cfg.num_image_tokens
    ids = torch.randint(5, 60, (2, 6 + n + 6))
    ids[1, :6] = ids[0, :6]  # the same "system message"
    ids[:, 6 : 6 + n] = model.cfg.image_token_id
    pixels, mask = torch.randn(2, 3, 32, 32), torch.ones_like(ids)
    with torch.no_grad():
        full = model(ids, pixels, mask)["logits"]
        cache, p = KVCache(model.cfg.llm.n_layers), 6 + n + 2
        steps = [model(ids[:, :p], pixels, mask[:, :p], cache=cache)["logits"]]
        steps += [model(ids[:, i : i + 1], None, mask[:, : i + 1], cache=cache)["logits"]
                  for i in range(p, ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
