"""Training-step time: our Llava vs transformers' LlavaForConditionalGeneration, same weights, same batch, CPU.

One step = forward + loss + backward with a stage's trainable set (stage 2: projector and LLM; stage 1: projector
only; the vision tower always frozen), as `LlavaModule.training_step` runs it, on a real batch of the toy pipeline's
data for that stage (generated offline in a few seconds). Both models get the same weights (exported with `export_hf_llava`) and must give the same loss and
gradients; they are timed in the same process, alternating, after warm-up, and the median of the repeats is reported.
Also timed: ours with packing (minillava/packing.py) partly and wholly switched off: every row computing the system
message itself (`llm.share_prefix = False`), and the reference path that also runs the token-wise layers on padding
(`llm.pack_tokens = False` too); and the AdamW step after the backward pass, fused (as training runs it) and per
tensor.

    python benchmarks/train_step.py                      # stage 2, batch 8, as the toy recipe
    python benchmarks/train_step.py --stage 1 --batch 64  # stage 1, as the toy recipe
    python benchmarks/train_step.py --threads 2          # one thread is the default: steadier on a busy machine
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from minillava import Llava, export_hf_llava
from minillava.conversation import TEMPLATES
from minillava.data.dataset import LlavaDataset, record_turns
from minillava.data.sampler import ModalityLengthGroupedBatchSampler
from minillava.data.toy_data import ToyDataConfig, generate_toy_data
from minillava.model import llava_preset, override
from minillava.packing import shared_prefix_length
from minillava.tokenizer import load_tokenizer, train_bpe_tokenizer
from minillava.training import apply_stage


def toy_batch(folder: Path, stage: int, batch_size: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], int]:
    """A real batch of the toy pipeline for `stage`: generated data, its BPE tokenizer, the v0 template,
    length-grouped like training. Returns the batch and the tokenizer's <image> id."""
    files = generate_toy_data(folder, ToyDataConfig(n_train=8 * batch_size, n_eval=8, n_lm=8 * batch_size, seed=seed))
    texts = [TEMPLATES["v0"].render(record_turns(r))[0]
             for key in ("lm", "stage1", "stage2") for r in json.loads(files[key].read_text())]
    train_bpe_tokenizer(texts, vocab_size=1023).save_pretrained(folder / "tokenizer")
    tokenizer = load_tokenizer(folder / "tokenizer")
    data = LlavaDataset(files[f"stage{stage}"], folder / "images", tokenizer, num_image_tokens=16, image_size=32, max_len=512)
    sampler = ModalityLengthGroupedBatchSampler(None, batch_size, True, lengths=data.lengths, seed=seed)
    batch = data.collate([data[i] for i in next(iter(sampler))])
    return batch, tokenizer.convert_tokens_to_ids("<image>")


def step_seconds(step) -> tuple[float, float]:
    """Wall time and CPU time of one call. With one thread, CPU time leaves out the moments when other processes
    had the core, so it is the steadier measure on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(steps: dict, repeats: int) -> dict[str, list[float]]:
    """Median [wall, CPU] seconds of each call, timed in turn so that all see the same machine load."""
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(step_seconds(step))
    return {k: [statistics.median(x[i] for x in v) for i in (0, 1)] for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", type=int, default=2, choices=(1, 2))
    parser.add_argument("--batch", type=int, default=8, help="the toy recipe's: 64 in stage 1, 8 in stage 2")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        batch, image_id = toy_batch(Path(folder), args.stage, args.batch)
    # the toy recipe's model (vocabulary 1024, context 512) with LLaVA-1.5's projector: transformers' is two layers
    cfg = override(llava_preset("toy"), {"llm.vocab_size": 1024, "llm.max_seq_len": 512, "projector": "mlp2x_gelu"})
    assert cfg.image_token_id == image_id
    torch.manual_seed(0)
    ours = Llava(cfg)
    apply_stage(ours, args.stage)
    ours.train()
    ours.vision.eval()
    with tempfile.TemporaryDirectory() as folder:
        export_hf_llava(ours, folder)
        theirs = transformers.LlavaForConditionalGeneration.from_pretrained(folder)
    theirs.model.vision_tower.requires_grad_(False)
    if args.stage == 1:  # only the projector trains
        theirs.model.language_model.requires_grad_(False)
        theirs.lm_head.requires_grad_(False)
    theirs.train()
    theirs.model.vision_tower.eval()

    def ours_step() -> None:
        ours.zero_grad(set_to_none=True)
        ours(**batch, return_logits=False)["loss"].backward()  # what LlavaModule.training_step runs

    def switched(pack_tokens: bool, share_prefix: bool):
        def step() -> None:
            llm = ours.cfg.llm
            llm.pack_tokens, llm.share_prefix = pack_tokens, share_prefix
            try:
                ours_step()
            finally:
                llm.pack_tokens = llm.share_prefix = True
        return step

    def theirs_step() -> None:
        theirs.zero_grad(set_to_none=True)
        theirs(**batch).loss.backward()

    with torch.no_grad():  # same weights, same batch: the same loss
        a, b = ours(**batch)["loss"].item(), theirs(**batch).loss.item()
    assert abs(a - b) < 1e-4, f"losses differ: ours {a:.6f}, transformers {b:.6f}"

    ours_step()
    theirs_step()  # and the same gradients
    torch.testing.assert_close(ours.projector[0].weight.grad, theirs.model.multi_modal_projector.linear_1.weight.grad,
                               atol=1e-5, rtol=1e-4)
    for _ in range(args.warmup):
        ours_step()
        theirs_step()
    med = alternate({"ours": ours_step,
                     "ours, unshared": switched(True, False),  # every row computes the system message itself
                     "ours, reference": switched(False, False),  # no packing: padding computed too
                     "transformers": theirs_step}, args.repeats)
    # the optimiser step that follows each backward pass (LlavaModule: AdamW, fused where it can be)
    params = [p for p in ours.parameters() if p.requires_grad]
    adam = {"fused": torch.optim.AdamW(params, lr=1e-6, fused=True),
            "per-tensor": torch.optim.AdamW(params, lr=1e-6, foreach=False)}
    for opt in adam.values():
        opt.step()
    adam_med = {k: cpu for k, (_, cpu) in alternate({k: opt.step for k, opt in adam.items()}, args.repeats).items()}
    b, t = batch["input_ids"].shape
    real, trained = int(batch["attention_mask"].sum()), int((batch["labels"] != -100).sum())
    print(f"toy LLaVA (mlp2x_gelu), stage-{args.stage} batch {b} x {t} tokens ({real} real, {trained} supervised), "
          f"loss {a:.4f} (both), {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    for k, (wall, cpu) in med.items():
        print(f"{k:>15}: {1000 * wall:7.1f} ms wall, {1000 * cpu:7.1f} ms CPU per training step "
              f"(medians of {args.repeats})")
    for other in ("transformers", "ours, unshared", "ours, reference"):
        ratio = [med["ours"][i] / med[other][i] for i in (0, 1)]
        print(f"ratio ours / {other}: {ratio[0]:.2f} (wall), {ratio[1]:.2f} (CPU)")
    shared = shared_prefix_length(batch["input_ids"], batch["attention_mask"], image_id)
    print(f"shared prefix: {shared} tokens of each row, {(b - 1) * shared} of {real} real tokens computed once; "
          f"padding: {b * t - real} of {b * t} positions")
    print("AdamW step: " + ", ".join(f"{k} {1000 * v:.1f} ms CPU" for k, v in adam_med.items())
          + f" (ratio {adam_med['fused'] / adam_med['per-tensor']:.2f})")


if __name__ == "__main__":
    main()
