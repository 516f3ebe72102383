"""Sizing a training run from a model config: parameters, memory per GPU and FLOPs per optimiser step.

`minillava plan` (minillava/plan.py) prints these for a training config; benchmarks/train_throughput.py compares
its measurements with them. GPUS lists the dense bf16 peak and the memory of common GPUs (spec sheets).

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
higher HFU (hardware FLOPs utilisation) that `minillava plan` prints. The paper's runs imply an MFU of roughly
22-29%.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import Llava, LlavaConfig

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
    "rtx4090": GPU("NVIDIA GeForce RTX 4090 24GB", 165.2, 23.99),  # bf16 with fp32 accumulation
}


def gpu_for_device_name(name: str) -> str | None:
    """torch.cuda.get_device_name() -> a key of GPUS, or None when the GPU is not listed."""
    n = name.upper()
    if "H100" in n:
        return "h100-pcie" if "PCIE" in n else "h100-80gb"
    for key, marker in (("h200", "H200"), ("b200", "B200"), ("l40s", "L40S"), ("rtx4090", "4090")):
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
                   precision: str, batch: int, seq: int, checkpointing: bool, lora_params: int = 0,
                   quantized: bool = False) -> Memory:
    """Peak memory of one GPU training a micro-batch of `batch` x `seq` tokens (assumptions: module docstring).

    `lora_params` > 0: LoRA (minillava.lora): only the adapters and the projector train; `quantized`: QLoRA, the
    adapted linear layers in 4-bit NF4 (see `lora_memory_per_gpu`)."""
    if lora_params or quantized:
        return lora_memory_per_gpu(cfg, counts, lora_params, data_parallel=data_parallel, sharded=sharded,
                                   precision=precision, batch=batch, seq=seq, checkpointing=checkpointing,
                                   quantized=quantized)
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


# LoRA: per decoder block and token, what the adapters add to a frozen block's saved tensors: lora_dropout's output
# (2 B, the input of lora_A) and its mask (1 B) for each adapted input (q, k, v, gate, up read d wide, o d wide,
# down f wide: 6 d + f), and the r-wide input of lora_B (2 B x r x 7)
LORA_INPUT_BYTES = 3
QLORA_BYTES_PER_PARAM = (4 + 0.127) / 8  # NF4 + double-quantised constants (the QLoRA paper)


def lora_memory_per_gpu(cfg: LlavaConfig, counts: ParamCounts, lora_params: int, *, data_parallel: int,
                        sharded: bool, precision: str, batch: int, seq: int, checkpointing: bool, r: int = 128,
                        quantized: bool = False) -> Memory:
    """Peak memory of one GPU training LoRA adapters + the projector on a frozen base (FinetuneModule lora_r).

    - weights: unsharded under a bf16 precision, the frozen base in bf16 (2 B; FinetuneModule casts it, as the
      official run's model.to(bf16)); QLoRA: the adapted linear layers in NF4 (~0.52 B), the rest in bf16;
      sharded (FSDP2): fp32 shards of everything (4 B / N). The trainable set (adapters + projector) in fp32.
    - gradients 4 B and AdamW 8 B per trainable parameter only.
    - activations: a frozen block crossed by gradients (its coefficients above) plus the adapters' own inputs.
    """
    half = precision in ("bf16-mixed", "bf16-true")
    trainable = counts.projector + lora_params
    frozen = counts.total - counts.projector
    shard = data_parallel if sharded else 1
    if sharded:
        weights = (frozen + trainable) * 4 / shard
    elif quantized:
        llm_linear = counts.llm_block * cfg.llm.n_layers  # the blocks' matmul weights (norms are negligible)
        weights = llm_linear * QLORA_BYTES_PER_PARAM + (frozen - llm_linear) * 2 + trainable * 4
    else:
        weights = frozen * (2 if half else 4) + trainable * 4
    gradients = trainable * 4 / shard
    optimizer = trainable * 8 / shard
    if sharded:
        unit = max(counts.llm_block, counts.llm_embed, counts.llm_head, counts.vision_block)
        buffers = 2 * unit * 2 + (lora_params / max(cfg.llm.n_layers, 1)) * 6
    else:
        buffers = trainable * 4 if data_parallel > 1 else 0.0
    llm = cfg.llm
    tokens = batch * seq
    compute = "bf16" if half or sharded else "autocast"
    adapters = LORA_INPUT_BYTES * (6 * llm.d_model + llm.ffn_dim) + 2 * 7 * r
    per_block = tokens * (block_activation_bytes(cfg, "bf16" if compute == "bf16" else compute, False) + adapters)
    if checkpointing:
        blocks = llm.n_layers * tokens * 2 * llm.d_model + per_block
    else:
        blocks = llm.n_layers * per_block
    activations = blocks + per_block + tokens * OUTSIDE_BLOCKS_BYTES_PER_D * llm.d_model
    logits = tokens * LOGITS_BYTES_PER_VOCAB * llm.vocab_size
    return Memory(weights, gradients, optimizer, buffers, activations, logits)
