"""Padding share of stage-2 batches with and without length grouping (minillava/data/sampler.py).

Padding share = padded positions / all positions of the padded batches (each rank pads its own batch to its
longest row), over one epoch. Three ways to batch:
- random: shuffled rows, W * B per global step, B per rank (DistributedSampler + DataLoader), modalities mixed;
- group=1: `ModalityLengthGroupedBatchSampler` with one global step per sorted pool, as the official
  `group_by_modality_length` does (it sorts mega-batches of W * B rows of one modality);
- group=32: our default, a pool of 32 global steps sorted by length, then cut into steps.

Data: (a) the toy run's stage 2 (generated here, or --run RUN to read RUN/data/stage2.json with RUN/tokenizer);
(b) synthetic token lengths shaped like the paper's and LLaVA-1.5's stage-2 data (`SHAPES`): these are our
estimates of the real files' length distributions, not measured on them (no download here). Lengths include the
image placeholders (256 at 224 px, 576 at 336 px) and ~40 tokens of template; all are clipped at 2048.

    python benchmarks/padding.py            # about half a minute on 2 cores
    python benchmarks/padding.py --run runs/toy
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from minillava.data.sampler import ModalityLengthGroupedBatchSampler, share

MAX_LEN = 2048
TEMPLATE = 40  # system message, role tags and separators, about (v1 with a LLaMA tokenizer)

# (rows, image tokens or 0 for text-only, median text tokens, lognormal sigma): text tokens ~ median * e^(sigma Z)
SHAPES: dict[str, list[tuple[int, int, float, float]]] = {
    # LLaVA-Instruct-158K at 224 px: 58K multi-turn conversations (several short answers), 23K detailed
    # descriptions (one ~100-word answer), 77K complex reasoning (one ~150-word answer)
    "LLaVA-Instruct-158K": [(58_000, 256, 180, 0.5), (23_000, 256, 140, 0.3), (77_000, 256, 200, 0.35)],
    # llava_v1_5_mix665k at 336 px: the 158K above, ~467K academic VQA records (many short question/answer pairs
    # about one image; OCR-VQA, GQA and VQAv2 hold ~10 each, RefCOCO and VG region captions alike) and ~40K
    # text-only ShareGPT conversations with a long tail up to the 2048 limit
    "llava_v1_5_mix665k": [(58_000, 576, 180, 0.5), (23_000, 576, 140, 0.3), (77_000, 576, 200, 0.35),
                           (467_000, 576, 150, 0.6), (40_688, 0, 700, 0.9)],
}


def synthetic_lengths(shape: list[tuple[int, int, float, float]], seed: int = 0) -> tuple[list[int], list[bool]]:
    rng = np.random.default_rng(seed)
    lengths: list[int] = []
    has_image: list[bool] = []
    for rows, image_tokens, median, sigma in shape:
        text = median * np.exp(sigma * rng.standard_normal(rows))
        lengths += np.minimum(image_tokens + TEMPLATE + np.ceil(text), MAX_LEN).astype(int).tolist()
        has_image += [image_tokens > 0] * rows
    return lengths, has_image


def toy_lengths(run: Path | None) -> tuple[list[int], list[bool]]:
    """Token lengths of the toy run's stage-2 records (the toy preset: 16 image tokens, v0, max_len 512)."""
    from minillava.conversation import TEMPLATES
    from minillava.data.dataset import LlavaDataset, record_turns
    from minillava.data.toy_data import ToyDataConfig, generate_toy_data
    from minillava.tokenizer import load_tokenizer, train_bpe_tokenizer

    def lengths_of(data: Path, tokenizer: Path) -> tuple[list[int], list[bool]]:
        ds = LlavaDataset(data / "stage2.json", data / "images", load_tokenizer(tokenizer), "v0",
                          num_image_tokens=16, image_size=32, max_len=512)
        return ds.lengths, ds.has_image

    if run is not None:
        return lengths_of(run / "data", run / "tokenizer")
    with tempfile.TemporaryDirectory() as tmp:
        files = generate_toy_data(Path(tmp) / "data", ToyDataConfig(n_train=1500, n_eval=0, n_lm=0, vqa_questions=8))
        texts = [TEMPLATES["v0"].render(record_turns(r))[0] for r in json.loads(files["stage2"].read_text())]
        train_bpe_tokenizer(texts, vocab_size=1023).save_pretrained(Path(tmp) / "tokenizer")
        return lengths_of(Path(tmp) / "data", Path(tmp) / "tokenizer")


def padding_share(lengths: list[int], has_image: list[bool], batch_size: int, world_size: int, grouped: bool,
                  group: int = 32, seed: int = 0) -> float:
    """Padded positions / all positions over one epoch of every rank's batches."""
    if grouped:
        sampler = ModalityLengthGroupedBatchSampler(None, batch_size, True, lengths=lengths, has_image=has_image,
                                                    seed=seed, group=group, rank=0, world_size=world_size)
        steps = sampler.plan(epoch=0)
    else:
        order = np.random.default_rng(seed).permutation(len(lengths)).tolist()
        step = batch_size * world_size
        steps = [order[i : i + step] for i in range(0, len(order) - step + 1, step)]
    lens = np.asarray(lengths)
    padded = total = 0
    for step in steps:
        for rank in range(world_size):
            batch = lens[share(step, rank, world_size)]  # (B,)
            total += batch.max() * len(batch)
            padded += batch.max() * len(batch) - batch.sum()
    return padded / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=None, help="a finished toy run folder (default: generate data)")
    args = ap.parse_args()
    datasets = {"toy stage 2": toy_lengths(args.run)} | {name: synthetic_lengths(s) for name, s in SHAPES.items()}
    settings = [(16, 8), (4, 1)]  # (per-device batch, ranks): the paper's 8 x A100s; one device, small batch
    print(f"{'data':22} {'rows':>7} {'text':>6} {'B':>3} {'W':>2} {'random':>7} {'group=1':>8} {'group=32':>9}")
    for name, (lengths, has_image) in datasets.items():
        for batch_size, world in ([(8, 1)] if name.startswith("toy") else []) + settings:
            shares = [padding_share(lengths, has_image, batch_size, world, grouped=False)]
            shares += [padding_share(lengths, has_image, batch_size, world, grouped=True, group=g) for g in (1, 32)]
            cells = " ".join(f"{100 * s:{w}.1f}%" for s, w in zip(shares, (6, 7, 8)))
            text_only = len(has_image) - sum(has_image)
            print(f"{name:22} {len(lengths):7} {text_only:6} {batch_size:3} {world:2} {cells}")


if __name__ == "__main__":
    main()
