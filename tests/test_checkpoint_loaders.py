"""Loaders (`minillava.checkpoints.loaders`) on tiny checkpoints written with the real formats' key names: HF Llama,
open_clip and HF CLIP towers, original LLaVA folders and stage-1 projector files.
"""

from __future__ import annotations

import json

import huggingface_hub
import pytest
import torch
import transformers
import real_checkpoints
from tiny_llava import tiny_cfg

from minillava import load_hf_llama, load_llava, load_open_clip_vision
from minillava.checkpoints import (
    export_state,
    load_projector,
    open_clip_vision_config,
    original_llava_rules,
    resolve_open_clip_file,
    save_hf_llama,
)
from minillava.model import Llava, override
from minillava.constants import IMAGE_TOKEN
from minillava.tokenizer import load_tokenizer, train_bpe_tokenizer
from minillava.vision import VISION_PRESETS

def inputs(model: Llava) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 64, (1, model.cfg.num_image_tokens + 6))
    ids[0, 1 : 1 + model.cfg.num_image_tokens] = model.cfg.image_token_id
    return ids, torch.randn(1, 3, 32, 32)


def logits(model: Llava, ids, pixels) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, pixels)["logits"]


def test_hf_llama_folder_with_tokenizer(tmp_path):
    torch.manual_seed(0)
    llm = Llava(tiny_cfg()).llm
    save_hf_llama(llm, tmp_path)
    train_bpe_tokenizer(["a red circle", "a blue square"], vocab_size=300).save_pretrained(tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path)  # what we write, transformers reads
    loaded = load_hf_llama(tmp_path)
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), llm(ids))
        torch.testing.assert_close(hf(ids).logits, llm(ids), atol=1e-4, rtol=0)
    tok = load_tokenizer(tmp_path)
    assert tok.decode(tok("a red circle", add_special_tokens=False)["input_ids"]) == "a red circle"
    assert IMAGE_TOKEN in tok.get_vocab()


def test_open_clip_names_give_the_paper_towers():
    assert open_clip_vision_config("ViT-L-14-quickgelu") == VISION_PRESETS["vit-l-14"]
    assert open_clip_vision_config("ViT-L-14-336", quick_gelu=True) == VISION_PRESETS["vit-l-14-336"]
    assert open_clip_vision_config("ViT-L-14").quick_gelu is False  # the plain name is GELU: not for OpenAI weights
    with pytest.raises(ValueError, match="unknown open_clip model"):
        open_clip_vision_config("ViT-Q-99")


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    return real_checkpoints.tiny_open_clip(tmp_path_factory.mktemp("open_clip"))


@pytest.mark.parametrize("file", ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
def test_open_clip_by_name_with_a_local_file(tiny_open_clip, file):
    clip, folder = tiny_open_clip
    tower = load_open_clip_vision(real_checkpoints.TINY_VIT_NAME, pretrained=folder / file)
    assert tower.cfg.quick_gelu and tower.cfg.num_patches == 16
    x = torch.randn(2, 3, 32, 32)
    expected = clip.visual.forward_intermediates(x, indices=[1], intermediates_only=True, output_fmt="NLC")
    with torch.no_grad():
        torch.testing.assert_close(tower(x), expected["image_intermediates"][0])


def test_open_clip_tag_resolves_in_the_hf_cache_only(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--timm--vit_large_patch14_clip_224.openai" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_open_clip_file("ViT-L-14", "openai") == snapshot / "open_clip_pytorch_model.bin"
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        resolve_open_clip_file("ViT-L-14", "laion2b_s32b_b82k")


def write_original_llava(model: Llava, folder, clip_folder, shards: int = 2) -> None:
    """An original LLaVA folder: merged LLM + model.mm_projector.* in .bin shards, a LlavaLlamaForCausalLM config."""
    folder.mkdir(parents=True, exist_ok=True)
    state = export_state(original_llava_rules(model.cfg), model.state_dict())
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = keys[i::shards]
        torch.save({k: state[k] for k in part}, folder / name)
        weight_map |= dict.fromkeys(part, name)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    llm = model.cfg.llm
    config = {
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "hidden_act": "silu",
        "hidden_size": llm.d_model, "intermediate_size": llm.ffn_dim, "num_attention_heads": llm.n_heads,
        "num_hidden_layers": llm.n_layers, "num_key_value_heads": llm.n_kv_heads, "rms_norm_eps": llm.norm_eps,
        "vocab_size": llm.vocab_size, "max_position_embeddings": llm.max_seq_len, "tie_word_embeddings": False,
        "mm_vision_tower": str(clip_folder), "mm_hidden_size": model.cfg.vision.width,
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_use_im_start_end": False,
    }
    if model.cfg.projector != "linear":  # LLaVA v1 configs have no mm_projector_type: linear
        config["mm_projector_type"] = model.cfg.projector
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def hf_clip_folder(tmp_path_factory):
    return real_checkpoints.hf_clip_folder(tmp_path_factory.mktemp("clip"))


@pytest.mark.parametrize("projector", ["linear", "mlp2x_gelu"])
def test_original_llava_checkpoint(tmp_path, hf_clip_folder, projector):
    from minillava.checkpoints import load_hf_clip_vision

    model = Llava(tiny_cfg(projector)).eval()
    model.vision = load_hf_clip_vision(hf_clip_folder)
    write_original_llava(model, tmp_path / "llava", hf_clip_folder)
    loaded = load_llava(tmp_path / "llava")  # the tower comes from the folder named in mm_vision_tower
    assert loaded.cfg.projector == projector and loaded.cfg.image_token_id == 64
    ids, pixels = inputs(model)
    torch.testing.assert_close(logits(loaded, ids, pixels), logits(model, ids, pixels))
    assert not any(p.requires_grad for p in loaded.vision.parameters())

    # stage 1 saves only the projector, under the original names
    torch.manual_seed(1)
    stage1 = Llava(tiny_cfg(projector)).projector
    state = export_state(original_llava_rules(model.cfg), {"projector." + k: v for k, v in stage1.state_dict().items()}
                         | {k: v for k, v in model.state_dict().items() if not k.startswith("projector.")})
    torch.save({k: v for k, v in state.items() if "mm_projector" in k}, tmp_path / "mm_projector.bin")
    with_stage1 = load_llava(tmp_path / "llava", vision=hf_clip_folder, projector=tmp_path / "mm_projector.bin")
    for k, v in stage1.state_dict().items():
        torch.testing.assert_close(with_stage1.projector.state_dict()[k], v)
    other = Llava(tiny_cfg("mlp2x_gelu" if projector == "linear" else "linear"))
    with pytest.raises(ValueError, match=f"a {projector} projector, but the model's projector is"):
        load_projector(other, tmp_path / "mm_projector.bin")


def test_original_llava_with_an_open_clip_tower(tmp_path, tiny_open_clip, hf_clip_folder):
    clip, folder = tiny_open_clip
    tower = load_open_clip_vision(real_checkpoints.TINY_VIT_NAME, pretrained=folder / "open_clip_model.safetensors")
    model = Llava(override(tiny_cfg("mlp2x_gelu"), {"vision.embed_dim": 16})).eval()
    model.vision = tower
    write_original_llava(model, tmp_path, hf_clip_folder, shards=1)
    loaded = load_llava(tmp_path, vision=tower)
    ids, pixels = inputs(model)
    torch.testing.assert_close(logits(loaded, ids, pixels), logits(model, ids, pixels))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"mm_vision_tower": "openai/not-cached"}))
    with pytest.raises(FileNotFoundError, match="neither a local folder nor in the Hugging Face cache"):
        load_llava(tmp_path)
