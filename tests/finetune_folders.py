"""Tiny released-LLaVA stand-ins for the fine-tuning tests: one model (LLaVA-1.5's mlp2x_gelu projector, a 2-layer
64-wide LLM, a 3-block 32-wide CLIP at 32 px: 16 visual tokens) with a LLaMA-style tokenizer, written both as an
original-LLaVA folder (`save_llava`: HF Llama keys + model.mm_projector.*, the tower in vision_tower/, the
tokenizer) and as a transformers Llava folder (`export_hf_llava`, the tokenizer with <image> added), and a small
custom data set in the official record format over the toy world's images."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from llama_tokenizer import tiny_llama_tokenizer
from tiny_llava import tiny_cfg

from minillava.checkpoints import export_hf_llava, save_llava
from minillava.model import Llava, override
from minillava.tokenizer import load_tokenizer


def released_folders(root: Path, texts=()) -> dict[str, Path]:
    """{"original": llava-v1.5-tiny/, "transformers": llava-1.5-tiny-hf/, "tokenizer": tok/} under `root`."""
    tokdir = tiny_llama_tokenizer(root / "tok", texts, vocab_size=400)
    tok = load_tokenizer(tokdir)
    image_id = tok.convert_tokens_to_ids("<image>")  # after the vocabulary, as Vicuna's 32000
    cfg = override(tiny_cfg("mlp2x_gelu"), {"llm.vocab_size": image_id, "image_token_id": image_id})
    torch.manual_seed(0)
    model = Llava(cfg).eval()
    original = save_llava(root / "llava-v1.5-tiny", cfg, model.state_dict(), tokdir, image_aspect_ratio="pad")
    hf = export_hf_llava(model, root / "llava-1.5-tiny-hf", tok)
    return {"original": original, "transformers": hf, "tokenizer": tokdir}


def custom_data(toy_data, root: Path, n: int = 16) -> tuple[Path, Path]:
    """The first `n` toy instruction records as a custom data set (train.json + the images folder)."""
    records = json.loads(toy_data["stage2"].read_text())[:n]
    path = root / "custom" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"id": r["id"], "image": r["image"], "conversations": r["conversations"]}
                                for r in records]))
    return path, Path(toy_data["images"])


def batch(model: Llava, n_text: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Input ids with one image's placeholders and random pixels."""
    g = torch.Generator().manual_seed(seed)
    n = model.cfg.num_image_tokens
    text = torch.randint(3, model.cfg.image_token_id, (1, n_text), generator=g)
    ids = torch.cat([text[:, :2], torch.full((1, n), model.cfg.image_token_id), text[:, 2:]], dim=1)
    size = model.cfg.vision.image_size
    return {"input_ids": ids, "pixel_values": torch.randn(1, 3, size, size, generator=g)}
