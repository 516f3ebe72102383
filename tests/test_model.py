"""Shapes, padding, caching and the splice of visual tokens (Algorithms 1 and 2); packing: test_packing.py."""

from __future__ import annotations

import pytest
import torch
from tiny_llava import tiny_llava

from minillava.llama import KVCache, Llama, LlamaConfig
from minillava.model import Llava, llava_preset, override
from minillava.projector import build_projector
from minillava.vision import VisionTower, VISION_PRESETS


def test_vision_tower_returns_layer_minus_2_patches_without_cls():
    tower = VisionTower(VISION_PRESETS["toy"]).eval()
    x = torch.randn(3, 3, 32, 32)
    z = tower(x)
    assert z.shape == (3, 16, 128)  # (32 / 8)^2 patches, no CLS
    v = tower.visual  # the same computation by hand: embeddings, then all blocks but the last
    h = v._embeds(x)
    for block in v.transformer.resblocks[:-1]:
        h = block(h)
    torch.testing.assert_close(z, h[:, 1:])


def test_vision_tower_layer_and_cls_are_configurable():
    cfg = override(llava_preset("toy"), {"vision.feature_layer": -1, "vision.select": "cls_patch"}).vision
    tower = VisionTower(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    h = tower.visual._embeds(x)
    for block in tower.visual.transformer.resblocks:
        h = block(h)
    torch.testing.assert_close(tower(x), h)  # all blocks, CLS kept at position 0
    assert cfg.num_tokens == 17


@pytest.mark.parametrize("kind,n_params", [("linear", 128 * 128 + 128), ("mlp2x_gelu", 2 * (128 * 128 + 128))])
def test_projector_kinds(kind, n_params):
    proj = build_projector(kind, 128, 128)
    assert proj(torch.randn(2, 16, 128)).shape == (2, 16, 128)
    assert sum(p.numel() for p in proj.parameters()) == n_params
    with pytest.raises(ValueError, match="projector kind"):
        build_projector("qformer", 128, 128)


def test_visual_tokens_land_in_the_placeholders():
    model = tiny_llava()
    image_id = model.cfg.image_token_id
    ids = torch.randint(5, 64, (2, 24))
    ids[0, 2:18] = image_id
    ids[1, 5:21] = image_id
    pixels = torch.randn(2, 3, 32, 32)
    x = model.embed(ids, pixels)
    h = model.encode_images(pixels)
    torch.testing.assert_close(x[0, 2:18], h[0])
    torch.testing.assert_close(x[1, 5:21], h[1])
    torch.testing.assert_close(x[0, 18:], model.llm.embed_tokens(ids[0, 18:]))
    logits = model(ids, pixels)["logits"]
    assert logits.shape == (2, 24, 64)


def test_placeholder_count_must_match_images():
    model = tiny_llava()
    ids = torch.randint(5, 64, (1, 24))
    ids[0, :10] = model.cfg.image_token_id
    with pytest.raises(ValueError, match="10 image placeholders"):
        model.embed(ids, torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="no images"):
        model.embed(ids)


def test_loss_ignores_unsupervised_tokens():
    model = tiny_llava()
    ids = torch.randint(5, 64, (1, 12))
    labels = torch.full_like(ids, -100)
    labels[0, 8:] = ids[0, 8:]
    out = model(ids, labels=labels)
    logits = out["logits"][0, 7:11]
    expected = torch.nn.functional.cross_entropy(logits, ids[0, 8:12])
    torch.testing.assert_close(out["loss"], expected)
    with pytest.raises(ValueError, match="no supervised tokens"):
        model(ids, labels=torch.full_like(ids, -100))


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_padding_and_kv_cache_do_not_change_logits(n_kv_heads):
    torch.manual_seed(0)
    llm = Llama(LlamaConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, ffn_dim=64)).eval()
    ids = torch.randint(0, 50, (2, 10))
    ref = llm(ids)
    # left padding: row 1 is ids[1, 3:] behind 3 pads
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :3] = 0
    padded = llm(ids, attention_mask=mask)
    torch.testing.assert_close(padded[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[1, 3:], llm(ids[1:, 3:])[0], atol=1e-5, rtol=1e-5)
    # right padding takes the causal fast path; real positions must not change
    rmask = torch.ones(2, 10, dtype=torch.long)
    rmask[1, 7:] = 0
    torch.testing.assert_close(llm(ids, attention_mask=rmask)[1, :7], llm(ids[1:, :7])[0], atol=1e-5, rtol=1e-5)
    # prefill 6 positions, then one token at a time through the cache
    cache = KVCache(2)
    steps = [llm(ids[:, :6], attention_mask=mask[:, :6], cache=cache)]
    for i in range(6, 10):
        steps.append(llm(ids[:, i : i + 1], attention_mask=mask[:, : i + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, 1)[0], padded[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(steps, 1)[1, 3:], padded[1, 3:], atol=1e-5, rtol=1e-5)


def test_paper_preset_builds_on_meta_device():
    with torch.device("meta"):
        model = Llava(llava_preset("llava-v1-13b"))
    n_proj = sum(p.numel() for p in model.projector.parameters())
    assert n_proj == 5120 * 1024 + 5120  # W for Vicuna-13B is 5120 x 1024 (+ bias)
    assert model.cfg.num_image_tokens == 256
    assert model.llm.num_params() == 13_015_864_320


def test_training_loss_skips_unsupervised_logits_with_the_same_value_and_gradients():
    model = tiny_llava()
    ids = torch.randint(5, 64, (2, 30))
    ids[:, 2:18] = model.cfg.image_token_id
    labels = torch.full_like(ids, -100)
    labels[0, 20:], labels[1, 25:28] = ids[0, 20:], ids[1, 25:28]
    pixels = torch.randn(2, 3, 32, 32)
    grads = []
    for return_logits in (True, False):
        model.zero_grad()
        out = model(ids, pixels, labels=labels, return_logits=return_logits)
        assert ("logits" in out) == return_logits
        out["loss"].backward()
        grads.append((out["loss"].detach(), model.projector.weight.grad.clone(), model.llm.lm_head.weight.grad.clone()))
    for full, supervised_only in zip(*grads):
        torch.testing.assert_close(full, supervised_only)
    with pytest.raises(ValueError, match="needs labels"):
        model(ids, pixels, return_logits=False)
