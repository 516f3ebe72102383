"""Tiny offline stand-ins for the real checkpoints, written in their release formats: an HF Llama folder saved by
transformers, a transformers CLIP folder (like openai/clip-vit-large-patch14) and an open_clip model registered by
name with its state dict saved as open_clip does."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import transformers
from safetensors.torch import save_file

TINY_VIT = {"embed_dim": 16, "quick_gelu": True,
            "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 8, "patch_size": 8},
            "text_cfg": {"context_length": 8, "vocab_size": 40, "width": 16, "heads": 2, "layers": 1}}
TINY_VIT_NAME = "minillava-tiny-ViT"


def hf_llama_folder(folder: Path, vocab_size: int = 64, seed: int = 0, tokenizer=None) -> Path:
    """`LlamaForCausalLM.save_pretrained` of a 2-layer, 64-wide Llama (plus the tokenizer, if given)."""
    config = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                      max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=False)
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def hf_clip_folder(folder: Path, seed: int = 0) -> Path:
    """A whole transformers CLIPModel folder (vision_model.* + text_model.* keys), like openai/clip-vit-large-*."""
    folder.mkdir(parents=True, exist_ok=True)
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=3,
                                           num_attention_heads=4, image_size=32, patch_size=8, projection_dim=128,
                                           hidden_act="quick_gelu")
    text = transformers.CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, vocab_size=40, max_position_embeddings=8)
    torch.manual_seed(seed)
    clip = transformers.CLIPModel(transformers.CLIPConfig(vision_config=vision.to_dict(), text_config=text.to_dict()))
    state = {("vision_model." + k if k.startswith(("embeddings", "encoder", "pre_layrnorm", "post_layernorm"))
              else k): v.contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    clip.config.save_pretrained(folder)
    return folder


def tiny_open_clip(folder: Path, seed: int = 0):
    """A tiny open_clip model registered as TINY_VIT_NAME; its whole-CLIP state dict saved as .bin and .safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TINY_VIT_NAME}.json").write_text(json.dumps(TINY_VIT))
    open_clip.add_model_config(folder / f"{TINY_VIT_NAME}.json")
    torch.manual_seed(seed)
    clip = open_clip.create_model(TINY_VIT_NAME, pretrained=None).eval()
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return clip, folder
