"""Training throughput (tokens/s) and MFU of LlavaModule on one device, through a Lightning Trainer.

What a run of the paper's configs does per GPU, on fake data of the right shape: every row is `--seq` tokens (no
padding, so nothing is skipped by packing) with one image's worth of `<image>` placeholders near the start, random
token ids, labels on the second half (about as much as LLaVA's answers), and a random image. The Trainer uses the
configs' strategy (ModelParallelStrategy: FSDP2 on a one-GPU mesh, as configure_model shards it) and bf16-mixed on
a GPU; "auto" and fp32 on the CPU. The first `--warmup` steps (allocator, kernels' autotuning) are left out; each
step is timed between CUDA synchronisations, so the figures are steady-state optimiser steps, Lightning included.

FLOPs per step come from `minillava.sizing.training_flops`, the function `minillava plan` uses (formulas in the
docstring of minillava/sizing.py): per token, 2 N forward + 4 N backward through the trained LLM (N its matmul
parameters; the unembedding only on supervised rows), attention 4 L d s forward and twice that backward, the
frozen tower's forward per image, the projector's forward and weight gradients. MFU counts those model FLOPs
(PaLM's definition: recomputation excluded); HFU adds the recomputed forward of activation checkpointing.
Peak: the GPU's dense bf16 figure (minillava.sizing.GPUS, found from torch.cuda.get_device_name) or --peak-tflops.

    python benchmarks/train_throughput.py --preset tiny             # a toy-sized model, CPU, seconds
    python benchmarks/train_throughput.py --preset 1b               # ~1.3B LLaMA + ViT-L/14, seq 2048, one 80 GB GPU
    python benchmarks/train_throughput.py --preset 1b --no-checkpointing --batch 2
    python benchmarks/train_throughput.py --preset 7b               # LLaVA-7B: ~110 GiB, H200 / B200 only

The last line is JSON (tokens_per_s, step_seconds, tflops, mfu, hfu, peak memory and the plan's estimate of it).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import warnings
from dataclasses import dataclass, field

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from minillava.constants import IGNORE_INDEX
from minillava.sizing import GIB, GPUS, count_params, gpu_for_device_name, memory_per_gpu, training_flops
from minillava.training import LlavaModule


@dataclass(frozen=True)
class Bench:
    preset: str
    overrides: dict = field(default_factory=dict)
    seq: int = 2048
    batch: int = 1


BENCHES = {
    # the toy model of `minillava toy`: seconds on a CPU
    "tiny": Bench("toy", seq=64, batch=4),
    # a TinyLlama-sized LLM (d 2048, 22 layers, FFN 5632; 32 heads of 64) under the paper's tower and linear W:
    # ~1.3B parameters; batch 8 x 2048 fits an 80 GB GPU with checkpointing (minillava plan's estimate)
    "1b": Bench("llava-v1-7b", {"llm.d_model": 2048, "llm.n_layers": 22, "llm.ffn_dim": 5632}, seq=2048, batch=8),
    # the 7B of the paper's ablation: fp32 masters + AdamW alone are ~105 GiB on one device
    "7b": Bench("llava-v1-7b", seq=2048, batch=2),
}


class FakeLlavaData(Dataset):
    """`n` rows of `seq` tokens: BOS-like random prefix, `num_image_tokens` placeholders, random text; labels on
    the second half. Deterministic per index."""

    def __init__(self, n: int, seq: int, vocab: int, image_token_id: int, num_image_tokens: int, image_size: int,
                 prefix: int = 8) -> None:
        if prefix + num_image_tokens >= seq // 2:
            raise ValueError(f"seq {seq} is too short for {num_image_tokens} image tokens and supervised text")
        self.n, self.seq, self.vocab, self.image_token_id = n, seq, vocab, image_token_id
        self.num_image_tokens, self.image_size, self.prefix = num_image_tokens, image_size, prefix

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        ids = torch.randint(0, self.vocab, (self.seq,), generator=g)
        ids[ids == self.image_token_id] = (self.image_token_id + 1) % self.vocab  # text never looks like a slot
        ids[self.prefix : self.prefix + self.num_image_tokens] = self.image_token_id
        labels = ids.clone()
        labels[: self.seq // 2] = IGNORE_INDEX  # (seq,): the second half is "the answer"
        return {
            "input_ids": ids,
            "attention_mask": torch.ones(self.seq, dtype=torch.long),
            "labels": labels,
            "pixel_values": torch.randn(3, self.image_size, self.image_size, generator=g),  # (c, H, W)
        }


class StepTimer(L.Callback):
    """Wall time of every optimiser step (one batch: no accumulation), between device synchronisations."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._start)


def strategy_for(name: str):
    if name == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1)
    return "auto"


def run(args: argparse.Namespace) -> dict:
    bench = BENCHES[args.preset]
    cuda = torch.cuda.is_available() and not args.cpu
    seq, batch = args.seq or bench.seq, args.batch or bench.batch
    strategy = args.strategy or ("fsdp2" if cuda else "auto")
    precision = args.precision or ("bf16-mixed" if cuda else "32-true")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    module = LlavaModule(stage=args.stage, preset=bench.preset, overrides=dict(bench.overrides), lr=1e-5,
                         warmup_ratio=0.0, activation_checkpointing=args.checkpointing)
    cfg = module.cfg
    data = FakeLlavaData((args.warmup + args.steps) * batch, seq, cfg.llm.vocab_size, cfg.image_token_id,
                         cfg.num_image_tokens, cfg.vision.image_size)
    timer = StepTimer()
    trainer = L.Trainer(accelerator="gpu" if cuda else "cpu", devices=1, strategy=strategy_for(strategy),
                        precision=precision, max_steps=args.warmup + args.steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[timer])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, DataLoader(data, batch_size=batch, shuffle=False, num_workers=args.workers))
    measured = timer.seconds[args.warmup :]
    if not measured:
        raise SystemExit(f"no measured steps: {len(timer.seconds)} ran, {args.warmup} of them warm-up")
    step_s = statistics.fmean(measured)

    counts = count_params(cfg)
    tokens = batch * seq
    supervised = (seq - seq // 2) / seq  # rows whose next token is a label, as FakeLlavaData sets them
    flops = training_flops(cfg, counts, args.stage, tokens=tokens, images=batch, seq=seq,
                           checkpointing=args.checkpointing, supervised_fraction=supervised)
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    gpu = gpu_for_device_name(device_name) if cuda else None
    peak = args.peak_tflops or (GPUS[gpu].peak_tflops if gpu else None)
    tflops = flops.model / step_s / 1e12
    planned = memory_per_gpu(cfg, counts, args.stage, data_parallel=1, sharded=strategy == "fsdp2",
                             precision=precision, batch=batch, seq=seq, checkpointing=args.checkpointing)
    return {
        "preset": args.preset, "device": device_name, "strategy": strategy, "precision": precision,
        "stage": args.stage, "checkpointing": args.checkpointing, "batch": batch, "seq": seq,
        "params": counts.total, "trainable": counts.trainable(args.stage),
        "steps": len(measured), "step_seconds": step_s, "step_seconds_median": statistics.median(measured),
        "tokens_per_s": tokens / step_s, "model_flops_per_step": flops.model, "hardware_flops_per_step": flops.hardware,
        "tflops": tflops, "peak_tflops": peak,
        "mfu": tflops / peak if peak else None,
        "hfu": flops.hardware / step_s / 1e12 / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / GIB if cuda else None,
        "planned_memory_gib": planned.total / GIB,
    }


def format_result(r: dict) -> str:
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    peak = f"of {r['peak_tflops']:g} TFLOPS" if r["peak_tflops"] else "(no peak known: pass --peak-tflops)"
    mem = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f} GiB"
    return "\n".join([
        f"{r['preset']} on {r['device']} ({r['strategy']}, {r['precision']}), stage {r['stage']}, activation "
        f"checkpointing {'on' if r['checkpointing'] else 'off'}, batch {r['batch']} x {r['seq']} tokens",
        f"  params          {r['params']:,} ({r['trainable']:,} trainable)",
        f"  step time       {r['step_seconds'] * 1e3:.1f} ms (mean of {r['steps']}; median "
        f"{r['step_seconds_median'] * 1e3:.1f} ms)",
        f"  tokens/s        {r['tokens_per_s']:,.0f}",
        f"  achieved        {r['tflops']:.3g} TFLOPS (model FLOPs; {r['model_flops_per_step'] / 1e12:.3g} TFLOP "
        "per step)",
        f"  MFU             {pct(r['mfu'])} {peak}; HFU {pct(r['hfu'])}",
        f"  peak memory     {mem} (minillava plan's estimate: {r['planned_memory_gib']:.1f} GiB)",
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(BENCHES), default="tiny")
    parser.add_argument("--batch", type=int, help="per-device batch (default: the preset's)")
    parser.add_argument("--seq", type=int, help="tokens per row (default: the preset's)")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=2)
    parser.add_argument("--steps", type=int, default=10, help="measured steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="steps before measuring (default: %(default)s)")
    parser.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True,
                        help="activation checkpointing per decoder block (default: on, as the paper configs)")
    parser.add_argument("--strategy", choices=("fsdp2", "auto"),
                        help="fsdp2: ModelParallelStrategy on one device (default on a GPU); auto (default on CPU)")
    parser.add_argument("--precision", help="default: bf16-mixed on a GPU, 32-true on the CPU")
    parser.add_argument("--peak-tflops", type=float, help="peak for MFU (default: the detected GPU's dense bf16)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner about TPUs and such
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode")  # the frozen tower, on purpose
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`")
    result = run(args)
    print(format_result(result))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
