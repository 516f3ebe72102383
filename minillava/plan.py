"""`minillava plan`: parameters, memory per GPU, FLOPs and hours of a training config, before renting the GPUs.

    minillava plan -c paper/llava-v1-13b-stage2 --devices 8 [--num-nodes 1] [--gpu a100-80gb] [--mfu 0.4]
                   [--batch 4] [--seq 2048] [--tokens-per-sample 600] [--samples 158000] [--strategy fsdp|ddp] [--json]

Parameters are counted on a model built on the meta device (no memory), so they are exact for any preset.

Memory per GPU, with `precision: bf16-mixed` (the configs' choice), P all parameters, T the trainable ones:
- weights: fp32 masters, 4 B x P. FSDP2 full shard (ModelParallelStrategy, minillava/distributed.py) keeps 1/N of
  every unit on each of the N data-parallel ranks; DDP (and one device) keeps them whole.
- gradients: fp32, 4 B x T (sharded under FSDP2: reduce-scattered in fp32).
- AdamW: exp_avg + exp_avg_sq in fp32, 8 B x T (sharded likewise). Frozen parameters have neither.
- buffers: FSDP2 gathers bf16 copies of one unit at a time (2 B x the largest unit, two in flight: the current and
  the prefetched one) and reduce-scatters one trained unit's gradients (bf16 + an fp32 copy: 6 B x a unit). DDP:
  its fp32 gradient buckets (4 B x T) when there is more than one rank.
- activations, per decoder block and token of the micro-batch (b x s tokens), bytes, with d the width, f the FFN
  width and e the head width; tensors that autograd saves for the backward pass, measured (tests/test_plan.py
  checks these against saved-tensor hooks on our DecoderBlock):
      bf16 blocks (FSDP2's param_dtype=bf16)   trained: 24 d + 8 f + 8 e     frozen, gradients cross: 16 d + 6 f + 8 e
      fp32 blocks under autocast (DDP)         trained: 34 d + 8 f + 8 e     frozen, gradients cross: 16 d + 6 f + 8 e
                                               plus the bf16 cast of the block's weights, 2 B per parameter
  SDPA's flash / memory-efficient kernels keep no s x s attention matrix, so nothing grows with s^2.
  Without checkpointing every block keeps its share; with checkpointing (per block) each keeps only its input
  (2 d bf16, 4 d fp32 residual under autocast) and one block at a time is recomputed. Either way add one block's
  worth for the backward pass's working memory, and ~12 d per token outside the blocks (embeddings, final norm).
  The frozen tower runs under no_grad and keeps nothing.
- logits + loss: ~10 B x vocabulary per supervised row (fp32 log-probabilities kept for the backward pass and
  their fp32 + bf16 gradients). Training unembeds only supervised rows (llama.supervised_lm_loss); the plan
  assumes every row is supervised, an upper bound.
Not counted: the CUDA context (~0.5-1 GiB), allocator fragmentation, NCCL buffers. Keep ~10% headroom.

FLOPs per optimiser step (`training_flops`; benchmarks/train_throughput.py uses the same function), with N the
LLM's matmul parameters (its blocks and the unembedding; the embedding lookup costs nothing), L layers, d width,
s the sequence length (PaLM's convention: attention counted over the full s, as a non-causal kernel would):
- LLM forward: 2 N + 4 L d s per token (matmuls + attention scores and mixing).
- LLM backward: trained (stage 2): 2x its forward (gradients for weights and inputs). Frozen but crossed by the
  gradient on its way back to the projector (stage 1): 2 N + 8 L d s (input gradients only; attention has no
  weights, so its backward is twice its forward in both stages).
- projector: 2 P_W per visual token forward, 2 P_W backward (weight gradients only: the tower below is frozen).
- vision tower: forward only, through the blocks up to the feature layer: 2 P_used + 4 L_v w n per patch token.
- model FLOPs are these; hardware FLOPs add the recomputed LLM forward when activation checkpointing is on.
MFU (model FLOPs utilisation, PaLM's definition) = model FLOPs per second / (GPUs x peak). It ignores
recomputation, so at a given MFU the time does not depend on checkpointing; the hardware must then sustain the
higher HFU (hardware FLOPs utilisation) that the table prints. The paper's runs imply an MFU of roughly 22-29%.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .model import Llava, LlavaConfig, llava_preset, override
from .recipe import Recipe, accumulation_for, global_batch_size, recipe_for

GIB = 2**30


@dataclass(frozen=True)
class GPU:
    name: str
    peak_tflops: float  # dense bf16 tensor-core peak, spec sheet
    memory_gib: float


GPUS: dict[str, GPU] = {
    "a100-40gb": GPU("NVIDIA A100 40GB", 312, 40),
    "a100-80gb": GPU("NVIDIA A100 80GB", 312, 80),
    "h100-80gb": GPU("NVIDIA H100 SXM 80GB", 989, 79.6),
    "h100-pcie": GPU("NVIDIA H100 PCIe 80GB", 756, 79.6),
    "h200": GPU("NVIDIA H200 141GB", 989, 139.8),
    "b200": GPU("NVIDIA B200 180GB", 2250, 178),
    "l40s": GPU("NVIDIA L40S 48GB", 362, 44.4),
}


def gpu_for_device_name(name: str) -> str | None:
    """torch.cuda.get_device_name() -> a key of GPUS, or None when the GPU is not listed."""
    n = name.upper()
    if "H100" in n:
        return "h100-pcie" if "PCIE" in n else "h100-80gb"
    for key, marker in (("h200", "H200"), ("b200", "B200"), ("l40s", "L40S")):
        if marker in n:
            return key
    if "A100" in n:
        return "a100-40gb" if "40GB" in n.replace(" ", "") else "a100-80gb"
    return None


# ---------------------------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class ParamCounts:
    vision: int  # the frozen CLIP tower, without CLIP's output projection
    vision_used: int  # matmul parameters a patch token passes (patch embedding + blocks up to the feature layer)
    vision_block: int
    projector: int
    llm: int
    llm_embed: int
    llm_head: int
    llm_block: int  # one decoder block

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.llm

    def trainable(self, stage: int) -> int:
        """Algorithm 3's freezing policy (training.apply_stage): W in stage 1; W and the LLM in stage 2."""
        return self.projector + (self.llm if stage == 2 else 0)


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_params(cfg: LlavaConfig) -> ParamCounts:
    with torch.device("meta"):  # shapes only: a 13B model costs no memory
        model = Llava(cfg)
    visual = model.vision.visual
    blocks = visual.transformer.resblocks
    return ParamCounts(
        vision=numel(model.vision),
        vision_used=numel(visual.conv1) + sum(numel(b) for b in blocks[: model.vision.block_index + 1]),
        vision_block=numel(blocks[0]),
        projector=numel(model.projector),
        llm=numel(model.llm),
        llm_embed=numel(model.llm.embed_tokens),
        llm_head=numel(model.llm.lm_head),
        llm_block=numel(model.llm.layers[0]),
    )


# ---------------------------------------------------------------------------------------------------------------
# FLOPs


@dataclass(frozen=True)
class Flops:
    model: float  # what MFU counts
    hardware: float  # plus recomputation under activation checkpointing


def training_flops(cfg: LlavaConfig, counts: ParamCounts, stage: int, tokens: float, images: float, seq: float,
                   checkpointing: bool, supervised_fraction: float = 1.0) -> Flops:
    """FLOPs of one optimiser step over `tokens` LLM tokens (visual ones included) of sequences of length `seq`,
    with `images` images; formulas in the module docstring. `supervised_fraction`: share of rows that reach the
    unembedding (training computes logits only there)."""
    llm = cfg.llm
    blocks = counts.llm_block * llm.n_layers
    attn_fwd = tokens * 4 * llm.n_layers * llm.d_model * seq
    blocks_fwd = tokens * 2 * blocks + attn_fwd
    head_fwd = tokens * supervised_fraction * 2 * counts.llm_head
    llm_fwd = blocks_fwd + head_fwd
    matmul_fwd = llm_fwd - attn_fwd
    llm_bwd = (2 if stage == 2 else 1) * matmul_fwd + 2 * attn_fwd
    v = cfg.vision
    patches = v.num_patches + 1  # the tower computes the CLS token too
    used_layers = v.layers + v.feature_layer + 1
    vision_fwd = images * patches * (2 * counts.vision_used + 4 * used_layers * v.width * patches)
    projector = images * cfg.num_image_tokens * 2 * counts.projector * 2  # forward + weight gradients
    model = llm_fwd + llm_bwd + vision_fwd + projector
    return Flops(model=model, hardware=model + (blocks_fwd if checkpointing else 0.0))


# ---------------------------------------------------------------------------------------------------------------
# memory

BLOCK_BYTES = {  # (d, f, e) coefficients of bytes per token per decoder block; see the module docstring
    ("bf16", True): (24, 8, 8),
    ("bf16", False): (16, 6, 8),
    ("autocast", True): (34, 8, 8),
    ("autocast", False): (16, 6, 8),
}
OUTSIDE_BLOCKS_BYTES_PER_D = 12  # embeddings, the image splice and the final norm, per token
LOGITS_BYTES_PER_VOCAB = 10


def block_activation_bytes(cfg: LlavaConfig, compute: str, trained: bool) -> int:
    """Bytes that one decoder block saves for the backward pass, per token (its input included)."""
    cd, cf, ce = BLOCK_BYTES[(compute, trained)]
    return cd * cfg.llm.d_model + cf * cfg.llm.ffn_dim + ce * cfg.llm.head_dim


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU, item by item."""

    weights: float
    gradients: float
    optimizer: float
    buffers: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.buffers + self.activations + self.logits


def memory_per_gpu(cfg: LlavaConfig, counts: ParamCounts, stage: int, *, data_parallel: int, sharded: bool,
                   precision: str, batch: int, seq: int, checkpointing: bool) -> Memory:
    """Peak memory of one GPU training a micro-batch of `batch` x `seq` tokens (assumptions: module docstring)."""
    if precision not in ("bf16-mixed", "bf16-true", "32-true", "32", "16-mixed"):
        raise ValueError(f"plan: precision {precision!r} is not modelled (bf16-mixed, bf16-true, 16-mixed, 32-true)")
    half = precision == "bf16-true"
    fp32 = precision in ("32-true", "32")
    # how blocks compute: FSDP2 casts its shards to bf16 for bf16-mixed (param_dtype); bf16-true stores bf16;
    # otherwise fp32 weights, autocast to 16 bits for the mixed precisions, plain fp32 for 32-true
    bf16_compute = half or (sharded and precision == "bf16-mixed")
    compute = "bf16" if bf16_compute or fp32 else "autocast"
    param_b = 2 if half else 4
    shard = data_parallel if sharded else 1
    trainable = counts.trainable(stage)
    weights = counts.total * param_b / shard
    gradients = trainable * param_b / shard
    optimizer = trainable * 2 * param_b / shard  # AdamW keeps its two moments in the parameters' dtype
    if sharded:
        unit = max(counts.llm_block, counts.llm_embed, counts.llm_head, counts.vision_block)
        trained_unit = counts.llm_block if stage == 2 else counts.projector
        gathered_b = 2 if bf16_compute else param_b
        grad_b = 6 if precision == "bf16-mixed" else param_b  # bf16 gradients + their fp32 copy for the reduction
        buffers = 2 * unit * gathered_b + trained_unit * grad_b
    else:
        buffers = trainable * param_b if data_parallel > 1 else 0.0
    trained = stage == 2
    llm = cfg.llm
    tokens = batch * seq
    per_block = tokens * block_activation_bytes(cfg, compute, trained)
    casts = 2 * counts.llm_block if compute == "autocast" else 0  # bf16 weight copies saved by each block
    if checkpointing:
        block_input = 4 if compute == "autocast" else 2
        blocks = llm.n_layers * tokens * block_input * llm.d_model + per_block + casts
    else:
        blocks = llm.n_layers * (per_block + casts)
    activations = blocks + per_block + tokens * OUTSIDE_BLOCKS_BYTES_PER_D * llm.d_model
    logits = tokens * LOGITS_BYTES_PER_VOCAB * llm.vocab_size
    scale = 2 if fp32 else 1  # 32-true: every saved tensor twice as wide as in bf16 (an approximation)
    return Memory(weights, gradients, optimizer, buffers, activations * scale, logits)


# ---------------------------------------------------------------------------------------------------------------
# reading a config


@dataclass
class Setup:
    """What a training config (plus command-line changes) says about the run."""

    config: str
    preset: str
    overrides: dict[str, Any]
    stage: int
    checkpointing: bool
    devices: int
    num_nodes: int
    strategy: str  # "fsdp" (sharded) or "ddp" (replicated)
    strategy_name: str
    precision: str
    batch: int
    accumulate: int
    global_batch: int
    recipe_global_batch: int | None
    seq: int
    max_epochs: int | None
    max_steps: int | None


def _init_args(section: Any) -> dict[str, Any]:
    if not isinstance(section, dict):
        return {}
    return dict(section.get("init_args") or {}) if "class_path" in section else dict(section)


def _devices(value: Any) -> int:
    if isinstance(value, int):
        return max(value, 1)
    if isinstance(value, (list, tuple)):
        return len(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return max(int(value), 1)
    return 1


def _strategy(value: Any) -> tuple[str, str]:
    """A config's trainer.strategy -> ("fsdp" | "ddp", its name)."""
    name = value.get("class_path", "") if isinstance(value, dict) else str(value or "auto")
    short = name.rsplit(".", 1)[-1]
    sharded = any(k in short.lower() for k in ("modelparallel", "fsdp"))
    return ("fsdp" if sharded else "ddp"), short


def config_path(name: str) -> Path:
    """A YAML path, or a packaged config name such as `paper/llava-v1-13b-stage2`."""
    from .cli import packaged_config

    path = Path(name)
    if path.is_file():
        return path
    found = packaged_config(name)
    if found is None:
        raise ValueError(f"config {name!r} is neither a file nor a packaged config (see `minillava configs`)")
    return found


def read_setup(config: str, devices: int | None = None, num_nodes: int | None = None, batch: int | None = None,
               seq: int | None = None, strategy: str | None = None) -> Setup:
    """The run a config describes; devices / num_nodes / batch change it while keeping the recipe's global batch
    (the GlobalBatch callback's value): the accumulation follows."""
    import yaml

    path = config_path(config)
    doc = yaml.safe_load(path.read_text()) or {}
    if "fit" in doc and "model" not in doc:  # a `minillava fit --print_config` dump
        doc = doc["fit"]
    model_section = doc.get("model") or {}
    class_path = model_section.get("class_path", "minillava.training.LlavaModule") if isinstance(
        model_section, dict) else ""
    if not class_path.endswith("LlavaModule"):
        raise ValueError(f"{path}: plan needs a minillava.training.LlavaModule config, this one trains {class_path}")
    model = _init_args(model_section)
    data = _init_args(doc.get("data"))
    trainer = doc.get("trainer") or {}
    recipe_batch = None
    for cb in trainer.get("callbacks") or []:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("GlobalBatch"):
            recipe_batch = int(_init_args(cb)["global_batch"])
    kind, name = _strategy(trainer.get("strategy"))
    if strategy is not None:
        kind, name = strategy, {"fsdp": "ModelParallelStrategy", "ddp": "DDPStrategy"}[strategy]
    n_dev = devices if devices is not None else _devices(trainer.get("devices", 1))
    n_nodes = num_nodes if num_nodes is not None else int(trainer.get("num_nodes") or 1)
    micro = batch if batch is not None else int(data.get("batch_size", 16))
    accumulate = int(trainer.get("accumulate_grad_batches") or 1)
    changed = any(v is not None for v in (devices, num_nodes, batch))
    if recipe_batch is not None and changed:
        accumulate = accumulation_for(recipe_batch, n_dev, n_nodes, micro)
    return Setup(
        config=config, preset=model.get("preset", "toy"), overrides=dict(model.get("overrides") or {}),
        stage=int(model.get("stage", 2)), checkpointing=bool(model.get("activation_checkpointing", False)),
        devices=n_dev, num_nodes=n_nodes, strategy=kind, strategy_name=name,
        precision=str(trainer.get("precision", "32-true")), batch=micro, accumulate=accumulate,
        global_batch=global_batch_size(n_dev, n_nodes, micro, accumulate), recipe_global_batch=recipe_batch,
        seq=int(seq if seq is not None else data.get("max_len", 2048)),
        max_epochs=trainer.get("max_epochs"), max_steps=trainer.get("max_steps"),
    )


# ---------------------------------------------------------------------------------------------------------------
# the plan


def make_plan(setup: Setup, gpu: str = "a100-80gb", mfu: float = 0.4, peak_tflops: float | None = None,
              samples: int | None = None, tokens_per_sample: int | None = None, epochs: int | None = None) -> dict:
    """Everything `minillava plan` prints, as a JSON-ready dict (bytes in GiB, FLOPs as floats)."""
    if gpu not in GPUS:
        raise ValueError(f"unknown --gpu {gpu!r}; known: {', '.join(GPUS)}")
    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu must be in (0, 1], got {mfu}")
    cfg = override(llava_preset(setup.preset), setup.overrides)
    counts = count_params(cfg)
    recipe: Recipe | None = recipe_for(setup.preset, setup.stage)
    data_parallel = setup.devices * setup.num_nodes
    n_gpus = data_parallel
    peak = peak_tflops if peak_tflops is not None else GPUS[gpu].peak_tflops

    memory = {}
    for key, ckpt in (("without", False), ("with", True)):
        m = memory_per_gpu(cfg, counts, setup.stage, data_parallel=data_parallel, sharded=setup.strategy == "fsdp",
                           precision=setup.precision, batch=setup.batch, seq=setup.seq, checkpointing=ckpt)
        memory[key] = {k: v / GIB for k, v in asdict(m).items()} | {"total": m.total / GIB}

    samples = samples if samples is not None else (recipe.samples if recipe else None)
    mean_tokens = tokens_per_sample or (recipe.mean_tokens if recipe else setup.seq)
    epochs = epochs if epochs is not None else (setup.max_epochs or (recipe.epochs if recipe else None))
    tokens = setup.global_batch * mean_tokens
    if setup.max_steps and setup.max_steps > 0 and epochs is None:
        steps = setup.max_steps
    elif samples is not None and epochs:
        steps = math.ceil(samples / setup.global_batch) * epochs
    else:
        steps = None
    compute = {}
    for key, ckpt in (("without", False), ("with", True)):
        f = training_flops(cfg, counts, setup.stage, tokens=tokens, images=setup.global_batch, seq=mean_tokens,
                           checkpointing=ckpt)
        step_s = f.model / (n_gpus * peak * 1e12 * mfu)
        compute[key] = {"model_flops": f.model, "hardware_flops": f.hardware, "step_seconds": step_s,
                        "hfu": mfu * f.hardware / f.model,
                        "hours": steps * step_s / 3600 if steps is not None else None}
    return {
        "config": setup.config,
        "recipe": asdict(recipe) if recipe else None,
        "setup": asdict(setup) | {"data_parallel": data_parallel, "gpu": gpu, "gpu_memory_gib": GPUS[gpu].memory_gib,
                                  "peak_tflops": peak, "mfu": mfu},
        "params": asdict(counts) | {"total": counts.total, "trainable": counts.trainable(setup.stage),
                                    "frozen": counts.total - counts.trainable(setup.stage)},
        "memory_gib": memory,
        "compute": compute,
        "data": {"samples": samples, "epochs": epochs, "steps": steps, "tokens_per_sample": mean_tokens,
                 "tokens_per_step": tokens, "padded_tokens_per_step": setup.global_batch * setup.seq},
    }


LABEL, COL = 52, 20  # table widths


def _n(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def format_plan(plan: dict) -> str:
    s, p, mem, comp, data = plan["setup"], plan["params"], plan["memory_gib"], plan["compute"], plan["data"]
    recipe = plan["recipe"]
    stage = s["stage"]
    role = {"vision": "frozen", "projector": "trains", "llm": "trains" if stage == 2 else "frozen"}
    sharding = (f"FSDP2 full shard over {s['data_parallel']}" if s["strategy"] == "fsdp"
                else "replicated" if s["data_parallel"] > 1 else "one device")
    cols = ["no checkpointing", "checkpointing"]
    cols[int(s["checkpointing"])] += " *"
    lines = [
        f"minillava plan: {plan['config']}" + (f"  [{recipe['name']}]" if recipe else ""),
        f"model {s['preset']}, stage {stage}: vision {p['vision']:,} ({role['vision']}) | projector "
        f"{p['projector']:,} ({role['projector']}) | LLM {p['llm']:,} ({role['llm']})",
        f"  total {p['total']:,}; trainable {p['trainable']:,}; frozen {p['frozen']:,}",
        f"run: {s['devices']} x {s['gpu']} x {s['num_nodes']} node(s), {s['strategy_name']} ({sharding}), "
        f"{s['precision']}",
        f"  batch {s['batch']} per GPU x {s['data_parallel']} GPUs x accumulate {s['accumulate']} = global "
        f"{s['global_batch']}" + (f" (recipe: {s['recipe_global_batch']})" if s["recipe_global_batch"] else ""),
        "  (* what the config runs: model.init_args.activation_checkpointing)",
        "",
        f"{'memory per GPU (GiB) at ' + str(s['batch']) + ' x ' + str(s['seq']) + ' tokens':<{LABEL}}"
        f"{cols[0]:>{COL}}{cols[1]:>{COL}}",
    ]
    w = "fp32 shards" if s["strategy"] == "fsdp" else "fp32, whole"
    rows = [("weights", f"weights ({w if s['precision'] != 'bf16-true' else 'bf16'})"),
            ("gradients", "gradients (trainable only)"), ("optimizer", "AdamW moments (trainable only)"),
            ("buffers", "FSDP gathered units + unsharded grads" if s["strategy"] == "fsdp" else "DDP grad buckets"),
            ("activations", "activations (LLM blocks + embeddings)"),
            ("logits", "logits + loss (upper bound: all rows)"), ("total", "total")]
    for key, label in rows:
        lines.append(f"  {label:<{LABEL - 2}}{mem['without'][key]:>{COL}.1f}{mem['with'][key]:>{COL}.1f}")
    cap = s["gpu_memory_gib"]
    fits = ["yes" if mem[k]["total"] < 0.9 * cap else "no" for k in ("without", "with")]
    label = f"fits {s['gpu']} ({cap:g} GiB, 10% headroom)?"
    lines.append(f"  {label:<{LABEL - 2}}{fits[0]:>{COL}}{fits[1]:>{COL}}")
    samples = "n/a" if data["samples"] is None else f"{data['samples']:,}"
    estimate = " (an estimate: --tokens-per-sample)" if recipe else ""
    lines += [
        "",
        f"compute: {samples} samples x {_n(data['epochs'], 0)} epoch(s), ~{data['tokens_per_sample']:,} tokens per "
        f"sample{estimate}",
        f"  {data['tokens_per_step']:,} tokens per optimiser step ({data['padded_tokens_per_step']:,} if every "
        f"sample were padded to {s['seq']}); MFU {s['mfu']:.2f} of {s['peak_tflops']:g} TFLOPS per GPU",
        f"  {'optimiser steps':<{LABEL - 2}}{_n(data['steps'], 0):>{COL}}{_n(data['steps'], 0):>{COL}}",
    ]
    crow = [("model_flops", "model FLOPs per step (PFLOP)", 1e-15, 2), ("hardware_flops",
            "hardware FLOPs per step (PFLOP, recompute incl.)", 1e-15, 2), ("hfu", "HFU the GPUs must sustain", 1, 2),
            ("step_seconds", "step time (s)", 1, 2), ("hours", f"total (h) on {s['devices'] * s['num_nodes']} GPUs",
                                                         1, 1)]
    for key, label, scale, digits in crow:
        vals = [comp[k][key] for k in ("without", "with")]
        lines.append(f"  {label:<{LABEL - 2}}" + "".join(f"{_n(None if v is None else v * scale, digits):>{COL}}"
                                                      for v in vals))
    if recipe and recipe.get("reported_hours"):
        lines.append(f"  the paper reports ~{recipe['reported_hours']:g} h for the 13B model on 8 x A100")
    return "\n".join(lines)


def plan_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="minillava plan",
        description="Parameters, memory per GPU, FLOPs and hours of a LlavaModule training config (assumptions: "
                    "the module docstring of minillava/plan.py).")
    parser.add_argument("-c", "--config", required=True, help="a packaged config name (minillava configs) or a YAML")
    parser.add_argument("--devices", type=int, help="GPUs per node (default: the config's)")
    parser.add_argument("--num-nodes", type=int, help="nodes (default: the config's)")
    parser.add_argument("--batch", type=int, help="per-GPU micro-batch (default: the config's data.batch_size)")
    parser.add_argument("--seq", type=int, help="padded sequence length for memory (default: data.max_len)")
    parser.add_argument("--tokens-per-sample", type=int,
                        help="mean tokens per sample for FLOPs and hours (default: the recipe's estimate)")
    parser.add_argument("--samples", type=int, help="training samples (default: the recipe's data set)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the config's max_epochs)")
    parser.add_argument("--strategy", choices=("fsdp", "ddp"), help="override: sharded (FSDP2) or replicated (DDP)")
    parser.add_argument("--gpu", default="a100-80gb", choices=sorted(GPUS), help="default: %(default)s")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (default: %(default)s)")
    parser.add_argument("--peak-tflops", type=float, help="override the GPU's dense bf16 peak")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    try:
        setup = read_setup(args.config, args.devices, args.num_nodes, args.batch, args.seq, args.strategy)
        plan = make_plan(setup, args.gpu, args.mfu, args.peak_tflops, args.samples, args.tokens_per_sample,
                         args.epochs)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"minillava plan: {exc}") from None
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
