"""`minillava plan`: parameters, memory per GPU, FLOPs and hours of a training config, before renting the GPUs.

    minillava plan -c paper/llava-v1-13b-stage2 --devices 8 [--num-nodes 1] [--gpu a100-80gb] [--mfu 0.4]
                   [--batch 4] [--seq 2048] [--tokens-per-sample 600] [--samples 158000] [--strategy fsdp|ddp] [--json]

Reads a config (preset, stage, strategy, precision, micro-batch, accumulation, the GlobalBatch callback's global
batch), applies the command line's changes (devices, nodes and micro-batch keep the recipe's global batch: the
accumulation follows) and prints the sizing of minillava/sizing.py (parameters, memory per GPU, FLOPs, hours);
the memory and FLOP model and its assumptions are in that module's docstring.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .lora import lora_param_count
from .model import llava_preset, override
from .recipe import Recipe, accumulation_for, global_batch_size, recipe_for
from .sizing import GIB, GPUS, count_params, memory_per_gpu, training_flops


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
    finetune: bool = False  # a FinetuneModule config: continues from a released LLaVA (init_from)
    init_from: str | None = None
    lora_r: int | None = None
    quantize: str | None = None


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


def _preset_of(init_from: str | None, where: Path) -> str:
    """The preset a released checkpoint's folder name names (llava-v1.5-7b -> llava-1.5-7b), for planning without
    the files; a folder that is here is read instead (make_plan)."""
    name = Path(str(init_from or "")).name.lower()
    found = re.search(r"llava-v?(1\.5|1)-(7b|13b)", name)
    if found is None:
        if init_from and Path(init_from).is_dir():
            return "llava-1.5-7b"  # replaced by the folder's own configuration
        raise ValueError(f"{where}: init_from {init_from!r} is not here and its name names no known model "
                         f"(llava-v1.5-7b, llava-v1.5-13b, llava-v1-13b, ...); pass --preset")
    version = "1.5" if found.group(1) == "1.5" else "v1"
    return f"llava-{version}-{found.group(2)}"


def read_setup(config: str, devices: int | None = None, num_nodes: int | None = None, batch: int | None = None,
               seq: int | None = None, strategy: str | None = None, preset: str | None = None) -> Setup:
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
    finetune = class_path.endswith("FinetuneModule")
    if not class_path.endswith("LlavaModule") and not finetune:
        raise ValueError(f"{path}: plan needs a minillava.training.LlavaModule or minillava.finetune.FinetuneModule "
                         f"config, this one trains {class_path}")
    model = _init_args(model_section)
    if finetune:
        model.setdefault("preset", preset or _preset_of(model.get("init_from"), path))
        model["stage"] = 2
    if preset is not None:
        model["preset"] = preset
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
        finetune=finetune, init_from=model.get("init_from"), lora_r=model.get("lora_r"),
        quantize=model.get("quantize"),
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
    if setup.init_from and Path(setup.init_from).is_dir():  # the checkpoint is here: its own configuration
        from .released import read_released

        cfg = override(read_released(setup.init_from).cfg, setup.overrides)
    counts = count_params(cfg)
    recipe: Recipe | None = None if setup.finetune else recipe_for(setup.preset, setup.stage)
    lora_params = lora_param_count(cfg, r=setup.lora_r) if setup.lora_r else 0
    data_parallel = setup.devices * setup.num_nodes
    n_gpus = data_parallel
    peak = peak_tflops if peak_tflops is not None else GPUS[gpu].peak_tflops

    memory = {}
    for key, ckpt in (("without", False), ("with", True)):
        m = memory_per_gpu(cfg, counts, setup.stage, data_parallel=data_parallel, sharded=setup.strategy == "fsdp",
                           precision=setup.precision, batch=setup.batch, seq=setup.seq, checkpointing=ckpt,
                           lora_params=lora_params, quantized=setup.quantize == "4bit")
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
                           checkpointing=ckpt)  # LoRA: the same matmuls (a frozen weight's input gradient is needed)
        step_s = f.model / (n_gpus * peak * 1e12 * mfu)
        compute[key] = {"model_flops": f.model, "hardware_flops": f.hardware, "step_seconds": step_s,
                        "hfu": mfu * f.hardware / f.model,
                        "hours": steps * step_s / 3600 if steps is not None else None}
    trainable = counts.projector + lora_params if setup.lora_r else counts.trainable(setup.stage)
    return {
        "finetune": finetune_modes(cfg, counts, setup) if setup.finetune else None,
        "config": setup.config,
        "recipe": asdict(recipe) if recipe else None,
        "setup": asdict(setup) | {"data_parallel": data_parallel, "gpu": gpu, "gpu_memory_gib": GPUS[gpu].memory_gib,
                                  "peak_tflops": peak, "mfu": mfu},
        "params": asdict(counts) | {"total": counts.total, "trainable": trainable, "frozen": counts.total - trainable,
                                    "lora": lora_params},
        "memory_gib": memory,
        "compute": compute,
        "data": {"samples": samples, "epochs": epochs, "steps": steps, "tokens_per_sample": mean_tokens,
                 "tokens_per_step": tokens, "padded_tokens_per_step": setup.global_batch * setup.seq},
    }


FINETUNE_GPUS = ("rtx4090", "a100-40gb", "a100-80gb")  # one 24, 40 and 80 GB GPU


def finetune_modes(cfg, counts, setup: Setup) -> dict:
    """Memory per GPU of the same run fully, with LoRA (the config's rank, else 128) and with QLoRA, activation
    checkpointing on, and whether it fits one 24 / 40 / 80 GB GPU (10% headroom). QLoRA is never sharded, nor is
    anything on one GPU (run it with trainer.strategy auto)."""
    r = setup.lora_r or 128
    lora = lora_param_count(cfg, r=r)
    dp = setup.devices * setup.num_nodes
    sharded = setup.strategy == "fsdp" and dp > 1  # on one GPU: strategy auto (FinetuneModule keeps a bf16 base)
    out = {}
    for mode, params, quantized in (("full", 0, False), ("lora", lora, False), ("qlora", lora, True)):
        m = memory_per_gpu(cfg, counts, 2, data_parallel=dp, sharded=sharded and not quantized,
                           precision=setup.precision, batch=setup.batch, seq=setup.seq, checkpointing=True,
                           lora_params=params, quantized=quantized)
        total = m.total / GIB
        out[mode] = {"trainable": counts.trainable(2) if mode == "full" else counts.projector + params,
                     "r": None if mode == "full" else r,
                     "weights_gib": m.weights / GIB, "grads_adam_gib": (m.gradients + m.optimizer) / GIB,
                     "activations_gib": (m.activations + m.logits) / GIB, "total_gib": total,
                     "fits": {g: total < 0.9 * GPUS[g].memory_gib for g in FINETUNE_GPUS}}
    return out


LABEL, COL = 52, 20  # table widths


def _n(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def format_plan(plan: dict) -> str:
    s, p, mem, comp, data = plan["setup"], plan["params"], plan["memory_gib"], plan["compute"], plan["data"]
    recipe = plan["recipe"]
    stage = s["stage"]
    role = {"vision": "frozen", "projector": "trains", "llm": "trains" if stage == 2 else "frozen"}
    if s.get("lora_r"):
        role["llm"] = f"frozen; LoRA r {s['lora_r']} adapters {p['lora']:,} train"
        if s.get("quantize"):
            role["llm"] += ", 4-bit base"
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
    if plan.get("finetune"):
        lines += ["", *format_finetune(plan["finetune"], s)]
    return "\n".join(lines)


def format_finetune(modes: dict, s: dict) -> list[str]:
    r = modes["lora"]["r"]
    names = {"full": "full", "lora": f"LoRA r {r}", "qlora": f"QLoRA r {r} (4-bit)"}
    width = 16
    lines = [f"fine-tuning modes, memory per GPU (GiB) at {s['batch']} x {s['seq']} tokens, checkpointing, "
             f"{s['data_parallel']} GPU(s):",
             f"  {'':<34}" + "".join(f"{names[m]:>{width + 4}}" for m in modes)]
    rows = [("trainable parameters", lambda m: f"{m['trainable']:,}"),
            ("weights", lambda m: f"{m['weights_gib']:.1f}"),
            ("gradients + AdamW (trainable only)", lambda m: f"{m['grads_adam_gib']:.1f}"),
            ("activations + logits", lambda m: f"{m['activations_gib']:.1f}"),
            ("total", lambda m: f"{m['total_gib']:.1f}")]
    rows += [(f"fits one {g} ({GPUS[g].memory_gib:.0f} GiB)?", lambda m, g=g: "yes" if m["fits"][g] else "no")
             for g in FINETUNE_GPUS]
    for label, cell in rows:
        lines.append(f"  {label:<34}" + "".join(f"{cell(m):>{width + 4}}" for m in modes.values()))
    lines.append("  (one GPU: trainer.strategy auto, unsharded, LoRA's frozen base in bf16; QLoRA is never sharded; "
                 "--batch and --seq change the activations)")
    return lines


def plan_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="minillava plan",
        description="Parameters, memory per GPU, FLOPs and hours of a LlavaModule training config (assumptions: "
                    "the module docstring of minillava/sizing.py).")
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
    parser.add_argument("--preset", help="the model, where a fine-tuning config's init_from is not here and its "
                                         "name names none (e.g. llava-1.5-7b)")
    args = parser.parse_args(argv)
    try:
        setup = read_setup(args.config, args.devices, args.num_nodes, args.batch, args.seq, args.strategy,
                           args.preset)
        plan = make_plan(setup, args.gpu, args.mfu, args.peak_tflops, args.samples, args.tokens_per_sample,
                         args.epochs)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"minillava plan: {exc}") from None
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
