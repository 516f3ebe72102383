"""The paper's path end to end on tiny offline stand-ins in the release layouts, as a user runs it:

an HF Llama folder saved by transformers (with a LLaMA-style tokenizer), a transformers CLIP folder, a stage-1 JSON
in blip_laion_cc_sbu_558k's format and a stage-2 JSON in llava_instruct_158k's, with JPEG files in the nested
folders those files name -> `minillava fit` stage 1 (FSDP2, 2 processes, mm_projector.bin) -> stage 2 (FSDP2,
2 processes, an original-LLaVA folder) -> `export_hf_llava` -> transformers' `LlavaForConditionalGeneration.generate`
answers, with the same greedy tokens as ours. LLaVA-1.5's choices (mlp2x_gelu, the plain template in stage 1,
v1 with <image> first and pad-to-square in stage 2), since transformers' Llava has a two-layer projector only.
"""

from __future__ import annotations

import json

import pytest
import real_checkpoints
import torch
import transformers
from fit_runs import fit, fsdp, write_config
from llama_tokenizer import tiny_llama_tokenizer
from PIL import Image

from minillava import export_hf_llava, load_llava
from minillava.data.dataset import clip_transform
from minillava.evaluate import prompt_example
from minillava.generate import SamplingConfig, generate
from minillava.tokenizer import load_tokenizer

pytestmark = pytest.mark.slow


def release_layout(toy_data, root):
    """The toy world's stage-1 and stage-2 records and scenes, rewritten as the released files are laid out."""
    stage1, stage2 = [], []
    for i, rec in enumerate(json.loads(toy_data["stage1"].read_text())[:48]):
        name = f"{i // 20:05d}/{i:09d}.jpg"  # blip_laion_cc_sbu_558k: "00000/000000010.jpg"
        stage1.append({"id": f"{i:09d}", "image": name, "conversations": rec["conversations"]})
        save_jpeg(toy_data["images"] / rec["image"], root / "LLaVA-Pretrain" / "images" / name)
    for i, rec in enumerate(json.loads(toy_data["stage2"].read_text())[:48]):
        name = f"{i:012d}.jpg"  # llava_instruct_158k: COCO train2017 file names
        stage2.append({"id": f"{i:012d}", "image": name, "conversations": rec["conversations"]})
        save_jpeg(toy_data["images"] / rec["image"], root / "coco" / "train2017" / name)
    (root / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(stage1))
    (root / "llava_instruct_158k.json").write_text(json.dumps(stage2))
    texts = [t["value"].replace("<image>", "") for r in stage1 + stage2 for t in r["conversations"]]
    return texts


def save_jpeg(source, target) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as im:  # not square, as photos are: the preprocessing crops or pads
        im.convert("RGB").resize((40, 32)).save(target, quality=95)


def test_release_files_to_transformers_generate(toy_data, tmp_path):
    texts = release_layout(toy_data, tmp_path)
    tokenizer = tiny_llama_tokenizer(tmp_path / "vicuna", texts, vocab_size=600)
    tok = load_tokenizer(tokenizer)
    vocab = tok.convert_tokens_to_ids("<image>")  # <image> is added after the base vocabulary, as for Vicuna
    real_checkpoints.hf_llama_folder(tmp_path / "vicuna", vocab_size=vocab)
    clip = real_checkpoints.hf_clip_folder(tmp_path / "clip-vit")

    def model(stage: int, **kw) -> dict:
        return {"class_path": "minillava.training.LlavaModule",
                "init_args": {"stage": stage, "preset": "llava-1.5-7b", "lr": 2e-3 if stage == 1 else 5e-4,
                              "llm_weights": str(tmp_path / "vicuna"), "vision_weights": str(clip),
                              "tokenizer": str(tokenizer), "image_aspect_ratio": "pad", **kw}}

    def data(json_file: str, images: str, template: str, **kw) -> dict:
        return {"class_path": "minillava.data.dataset.LlavaDataModule",
                "init_args": {"train_json": str(tmp_path / json_file), "image_folder": str(tmp_path / images),
                              "tokenizer": str(tokenizer), "template": template, "num_image_tokens": 16,
                              "image_size": 32, "max_len": 512, "batch_size": 4, "image_first": True, **kw}}

    fit(write_config(tmp_path / "stage1.yaml", devices=2, strategy=fsdp(2), max_steps=6,
                     model=model(1, save_to=str(tmp_path / "runs" / "mm_projector.bin")),
                     data=data("blip_laion_cc_sbu_558k.json", "LLaVA-Pretrain/images", "plain")))
    fit(write_config(tmp_path / "stage2.yaml", devices=2, strategy=fsdp(2), max_steps=6,
                     model=model(2, projector_weights=str(tmp_path / "runs" / "mm_projector.bin"),
                                 save_to=str(tmp_path / "runs" / "llava")),
                     data=data("llava_instruct_158k.json", "coco/train2017", "v1", image_aspect_ratio="pad")))

    ours = load_llava(tmp_path / "runs" / "llava")  # the tower comes with the folder
    export_hf_llava(ours, tmp_path / "hf", tok)
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()

    ex = prompt_example("What shapes are in the image?", tok, "v1", 16, suffix="")
    ids = ex.input_ids[None]
    with Image.open(tmp_path / "coco" / "train2017" / "000000000000.jpg") as im:
        pixels = clip_transform(32, "pad")(im.convert("RGB"))[None]
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                          max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    mine = generate(ours, ids, torch.ones_like(ids), tok, "</s>", pixels, SamplingConfig(max_new_tokens=12))[0]
    assert answer and answer == mine
