"""Parity with transformers on tiny random configurations: the same weights must give the same numbers.

Weights travel through our key maps (minillava/checkpoints/), as real checkpoints do: HF models are saved with
`save_pretrained` and loaded by our loaders, and ours are exported and loaded by `from_pretrained`.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from minillava import Llava, export_hf_llava, load_hf_llava
from minillava.checkpoints import load_hf_clip_vision, load_hf_llama
from minillava.model import llava_preset, override

ATOL = 1e-4


def tiny_hf_llama(n_kv_heads: int = 4, vocab: int = 96) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=n_kv_heads, rope_theta=10000.0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises norms to 1; random gains make the test see a swapped norm
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def hf_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as transformers' generate builds them: count real tokens (transformers does not do it for
    a plain forward call, so a left-padded row would otherwise start at a later position)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("n_kv_heads", [4, 2])  # multi-head and grouped-query attention
def test_llama_matches_transformers(tmp_path, n_kv_heads):
    hf = tiny_hf_llama(n_kv_heads)
    hf.save_pretrained(tmp_path)
    ours = load_hf_llama(tmp_path).eval()
    ids = torch.randint(0, 96, (3, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=ATOL, rtol=0)
        # left padding (generation) and right padding (training), rows of different lengths
        for side in ("left", "right"):
            mask = torch.ones(3, 12, dtype=torch.long)
            if side == "left":
                mask[1, :4], mask[2, :7] = 0, 0
            else:
                mask[1, 8:], mask[2, 5:] = 0, 0
            expected = hf(ids, attention_mask=mask, position_ids=hf_positions(mask)).logits
            got = ours(ids, attention_mask=mask)
            real = mask.bool()
            torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)


def test_llama_loads_bin_shards_with_index(tmp_path):
    """A .bin-sharded folder as older Vicuna releases ship it, with the rotary tables older transformers saved."""
    hf = tiny_hf_llama()
    state = hf.state_dict()
    keys = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
              "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
    weight_map = {}
    for i, (name, part) in enumerate(shards.items()):
        extra = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": torch.ones(4)}
        torch.save({k: state[k] for k in part} | extra, tmp_path / name)
        weight_map |= {k: name for k in [*part, *extra]}
    (tmp_path / "pytorch_model.bin.index.json").write_text(__import__("json").dumps({"weight_map": weight_map}))
    hf.config.save_pretrained(tmp_path)
    ours = load_hf_llama(tmp_path)
    ids = torch.randint(0, 96, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_vision_tower_matches_clip_layer_minus_2(tmp_path, act):
    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                        num_attention_heads=4, image_size=24, patch_size=8, hidden_act=act)
    hf = transformers.CLIPVisionModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    tower = load_hf_clip_vision(tmp_path)
    assert tower.cfg.quick_gelu == (act == "quick_gelu")
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        expected = hf(x, output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(tower(x), expected, atol=ATOL, rtol=0)
        # the activation matters: the same weights under the other one give other features
        tower.visual.transformer.resblocks[0].mlp.gelu = (torch.nn.GELU() if act == "quick_gelu"
                                                           else transformers.activations.QuickGELUActivation())
        assert (tower(x) - expected).abs().max() > 1e-3


def tiny_llava(projector: str = "mlp2x_gelu") -> Llava:
    cfg = override(llava_preset("toy"), {
        "llm.n_layers": 2, "llm.vocab_size": 64, "llm.d_model": 64, "llm.n_heads": 4, "llm.ffn_dim": 96,
        "vision.width": 32, "vision.layers": 3, "vision.head_width": 8, "vision.quick_gelu": True,
        "projector": projector,
    })
    torch.manual_seed(0)
    model = Llava(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.uniform_(0.5, 1.5)
    return model


def llava_batch(model: Llava) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = model.cfg.num_image_tokens
    ids = torch.randint(5, 64, (2, n + 10))
    ids[0, 2 : 2 + n] = model.cfg.image_token_id
    ids[1, 6 : 6 + n] = model.cfg.image_token_id
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    return ids, torch.randn(2, 3, 32, 32), mask


def test_llava_matches_transformers_both_directions(tmp_path):
    ours = tiny_llava()
    export_hf_llava(ours, tmp_path)
    hf, info = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    hf.eval()
    ids, pixels, mask = llava_batch(ours)
    with torch.no_grad():
        expected = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits
        got = ours(ids, pixels, attention_mask=mask)["logits"]
        real = mask.bool()
        torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)
        for source in (hf, tmp_path):  # the model object and the saved folder
            back = load_hf_llava(source)
            assert back.cfg == ours.cfg
            torch.testing.assert_close(back(ids, pixels, attention_mask=mask)["logits"], got, atol=0, rtol=0)


def test_export_widens_the_vocabulary_for_an_outside_placeholder(tmp_path):
    ours = tiny_llava()
    ours.cfg.image_token_id = 64  # like Vicuna's <image> = 32000 after a 32000-token vocabulary
    export_hf_llava(ours, tmp_path)
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, pixels, mask = llava_batch(ours)
    with torch.no_grad():
        expected = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits
        got = ours(ids, pixels, attention_mask=mask)["logits"]
    assert expected.shape[-1] == 65
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real][:, :64], atol=ATOL, rtol=0)


def test_export_refuses_a_single_linear_projector(tmp_path):
    with pytest.raises(ValueError, match="single linear W"):
        export_hf_llava(tiny_llava("linear"), tmp_path)
