"""Key maps: `Rule` tables from our modules' keys to each checkpoint format's (`llama_rules`, `clip_vision_rules`,
`projector_rules`, `hf_llava_rules`, `original_llava_rules`) and what they drive: `convert` (file tensors -> our state
dict, every shape checked, errors naming the file and the key), its inverse `export_state`, and `assign` (a
converted state into a model built on the meta device).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..llama import LlamaConfig, RotaryEmbedding
from ..model import LlavaConfig
from ..vision import VisionConfig


@dataclass(frozen=True)
class Rule:
    """Our key `ours` holds the file keys `theirs`, concatenated along dim 0 when there are several (q, k, v)."""

    ours: str
    theirs: tuple[str, ...]


def prefixed(rules: list[Rule], ours: str, theirs: str) -> list[Rule]:
    return [Rule(ours + r.ours, tuple(theirs + t for t in r.theirs)) for r in rules]


def llama_rules(cfg: LlamaConfig) -> list[Rule]:
    """Our Llama -> HF LlamaForCausalLM: the same names under `model.`, except the untied `lm_head`."""
    names = ["embed_tokens.weight", "norm.weight", "lm_head.weight"]
    for i in range(cfg.n_layers):
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"):
            names.append(f"layers.{i}.{part}.weight")
    return [Rule(n, (n if n.startswith("lm_head") else "model." + n,)) for n in names]


def clip_vision_rules(cfg: VisionConfig) -> list[Rule]:
    """Our (open_clip) VisionTransformer -> HF CLIPVisionModel, without the `vision_model.` prefix."""
    rules = [
        Rule("conv1.weight", ("embeddings.patch_embedding.weight",)),
        Rule("class_embedding", ("embeddings.class_embedding",)),
        Rule("positional_embedding", ("embeddings.position_embedding.weight",)),
    ]
    for p in ("weight", "bias"):
        rules += [Rule(f"ln_pre.{p}", (f"pre_layrnorm.{p}",)), Rule(f"ln_post.{p}", (f"post_layernorm.{p}",))]
    for i in range(cfg.layers):
        ours, hf = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for p in ("weight", "bias"):
            qkv = tuple(f"{hf}self_attn.{x}_proj.{p}" for x in "qkv")  # open_clip fuses them as in_proj = [q; k; v]
            rules += [
                Rule(f"{ours}attn.in_proj_{p}", qkv),
                Rule(f"{ours}attn.out_proj.{p}", (f"{hf}self_attn.out_proj.{p}",)),
                Rule(f"{ours}ln_1.{p}", (f"{hf}layer_norm1.{p}",)),
                Rule(f"{ours}ln_2.{p}", (f"{hf}layer_norm2.{p}",)),
                Rule(f"{ours}mlp.c_fc.{p}", (f"{hf}mlp.fc1.{p}",)),
                Rule(f"{ours}mlp.c_proj.{p}", (f"{hf}mlp.fc2.{p}",)),
            ]
    return rules


def projector_rules(kind: str, names: tuple[str, str] = ("0", "2")) -> list[Rule]:
    """Our projector -> a checkpoint's: linear `weight/bias`, or mlp2x_gelu `0.*`/`2.*` renamed to `names`."""
    if kind == "linear":
        return [Rule(p, (p,)) for p in ("weight", "bias")]
    return [Rule(f"{i}.{p}", (f"{n}.{p}",)) for i, n in zip(("0", "2"), names) for p in ("weight", "bias")]


def hf_llava_rules(cfg: LlavaConfig) -> list[Rule]:
    """Our Llava -> transformers' LlavaForConditionalGeneration (its in-memory names, see `hf_llava_key`)."""
    llm = [Rule("llm." + r.ours, ("model.language_model." + r.ours,)) for r in llama_rules(cfg.llm)
           if r.ours != "lm_head.weight"]
    return (prefixed(clip_vision_rules(cfg.vision), "vision.visual.", "model.vision_tower.")
            + prefixed(projector_rules("mlp2x_gelu", ("linear_1", "linear_2")), "projector.",
                       "model.multi_modal_projector.")
            + llm + [Rule("llm.lm_head.weight", ("lm_head.weight",))])


def original_llava_rules(cfg: LlavaConfig) -> list[Rule]:
    """Our Llava's LLM and projector -> an original LLaVA checkpoint (the vision tower is stored elsewhere)."""
    return prefixed(llama_rules(cfg.llm), "llm.", "") + prefixed(projector_rules(cfg.projector), "projector.",
                                                                 "model.mm_projector.")


# file key -> in-memory key of transformers 5 (older files and save_pretrained use the first names)
_HF_LLAVA_RENAMES = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("model.vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)


def rename_prefix(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    """`key` with its prefix replaced by the first (old, new) pair whose old prefix it has."""
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def hf_llava_key(key: str) -> str:
    return rename_prefix(key, _HF_LLAVA_RENAMES)


# keys that real checkpoints carry but LLaVA does not use: rotary tables (older transformers saved them), CLIP's
# position ids buffer, and everything of a full CLIP model that is not its vision tower
UNUSED_KEYS = re.compile(r"(^|\.)rotary_emb\.inv_freq$|(^|\.)embeddings\.position_ids$")
CLIP_NOT_VISION_KEYS = re.compile(r"^(text_model\.|visual_projection\.|text_projection\.|logit_scale$)")


def convert(
    rules: list[Rule],
    source: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    where: str,
    unused: Callable[[str], bool] = lambda k: bool(UNUSED_KEYS.search(k)),
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """File tensors -> our state dict. Every rule is satisfied, every file key used once, every shape checked."""
    if sorted(r.ours for r in rules) != sorted(expected):  # a bug in a rule table, not in the file
        raise AssertionError(f"key map does not cover the model: {sorted(set(expected) ^ {r.ours for r in rules})[:5]}")
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        shape = expected[rule.ours]
        parts = []
        for key in rule.theirs:
            if key not in source:
                raise ValueError(f"{where}: missing key {key!r} (needed for {rule.ours})")
            if key in used:
                raise ValueError(f"{where}: key {key!r} would be used twice")
            used.add(key)
            part, part_shape = source[key], (shape[0] // len(rule.theirs), *shape[1:])
            if tuple(part.shape) != part_shape:
                raise ValueError(f"{where}: {key} has shape {tuple(part.shape)}, the model expects {part_shape}")
            parts.append(part)
        t = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        out[rule.ours] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    left = sorted(k for k in source if k not in used and not unused(k))
    if left:
        raise ValueError(f"{where}: {len(left)} keys are not used by the model, e.g. {left[:5]}")
    return out


def export_state(rules: list[Rule], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> file tensors: the inverse of `convert` (fused tensors are split along dim 0)."""
    out = {}
    for rule in rules:
        for key, part in zip(rule.theirs, state[rule.ours].chunk(len(rule.theirs), dim=0)):
            out[key] = part.detach().contiguous().cpu()
    return out


def assign(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load `state` into a model built on the meta device (no second copy of the weights), then rebuild the
    non-persistent rotary tables, which meta construction left empty."""
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.reset_parameters()
    return model


def expected_shapes(module: nn.Module) -> dict[str, torch.Size]:
    """The shape of every key of `module`'s state dict: what a converted checkpoint must match."""
    return {k: v.shape for k, v in module.state_dict().items()}
