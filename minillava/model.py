"""LLaVA: a frozen CLIP vision tower, a trainable projector W, and a LLaMA language model (Algorithms 1-2).

The text carries one `<image>` placeholder token per visual token (the tokenizer step expands each `<image>`).
The forward pass embeds the text, projects the image's grid features into the same space, writes them into the
placeholder positions, and runs the decoder. Loss is next-token cross-entropy on supervised tokens only.

Shapes: b batch, t sequence, d LLM width, m images in the batch, n visual tokens per image, w vision width.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace

import torch
from torch import nn

from .llama import KVCache, Llama, LlamaConfig, causal_lm_loss, supervised_lm_loss
from .packing import shared_prefix_length
from .projector import PROJECTOR_KINDS, build_projector
from .vision import VisionConfig, VisionTower


@dataclass
class LlavaConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LlamaConfig = field(default_factory=LlamaConfig)
    projector: str = "linear"  # paper: linear; LLaVA-1.5: mlp2x_gelu
    image_token_id: int = 32000

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_tokens


class Llava(nn.Module):
    def __init__(self, cfg: LlavaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = VisionTower(cfg.vision)
        self.projector = build_projector(cfg.projector, cfg.vision.width, cfg.llm.d_model)
        self.llm = Llama(cfg.llm)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Algorithm 1: pixels (m, c, H, W) -> visual tokens H_v (m, n, d) in the LLM's embedding space."""
        with torch.no_grad():  # the vision tower is frozen in both stages
            z = self.vision(pixel_values)  # (m, n, w)
        return self.projector(z)  # (m, n, d); Alg 1, line 5

    def embed(
        self,
        input_ids: torch.Tensor,  # (b, t), with num_image_tokens placeholders per image
        pixel_values: torch.Tensor | None = None,  # (m, c, H, W), images in placeholder order
    ) -> torch.Tensor:  # (b, t, d)
        """Text embeddings with the projected visual tokens written into the placeholder positions."""
        slots = input_ids == self.cfg.image_token_id  # (b, t)
        # the placeholder id may lie outside the LLM's vocabulary (a real tokenizer's added <image>), so embed a
        # harmless id there; those rows are overwritten by visual tokens below
        x = self.llm.embed_tokens(input_ids.masked_fill(slots, 0))  # (b, t, d); Alg 2, line 1
        n_slots = int(slots.sum())
        if pixel_values is None:
            if n_slots:
                raise ValueError(f"input has {n_slots} image placeholders but no images were given")
            return x
        h = self.encode_images(pixel_values)  # (m, n, d); Alg 2, line 2
        if n_slots != h.shape[0] * h.shape[1]:  # Alg 2, line 3: exactly M N placeholders
            raise ValueError(
                f"input has {n_slots} image placeholders but {h.shape[0]} images x {h.shape[1]} tokens = "
                f"{h.shape[0] * h.shape[1]} visual tokens"
            )
        # Alg 2, lines 3-4: masked_scatter fills the True positions in row-major order, so image i lands in the
        # i-th run of n slots
        return x.masked_scatter(slots[..., None], h.to(x.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: KVCache | None = None,
        return_logits: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Algorithm 2: logits (b, t, v), and the loss on supervised tokens when labels are given.

        `return_logits=False` (training) returns only the loss, unembedding only the supervised rows.
        """
        if labels is None and not return_logits:
            raise ValueError("return_logits=False needs labels: there would be nothing to return")
        x = self.embed(input_ids, pixel_values)
        # for packing (minillava/packing.py, where switched on): the text that every row begins with (the system
        # message) ends at the first image slot, behind which each row has its own picture. A step on top of a KV
        # cache computes only new positions, and never packs
        shared = (shared_prefix_length(input_ids, attention_mask, stop_id=self.cfg.image_token_id)
                  if cache is None and self.cfg.llm.share_prefix else 0)
        hidden = self.llm.hidden_states(inputs_embeds=x, attention_mask=attention_mask, cache=cache,
                                        shared_prefix=shared)  # (b, t, d)
        out = {}
        if return_logits:
            out["logits"] = self.llm.lm_head(hidden)  # Alg 2, line 9
        if labels is not None:  # Alg 2, line 10
            out["loss"] = (causal_lm_loss(out["logits"], labels) if return_logits
                           else supervised_lm_loss(hidden, self.llm.lm_head, labels))
        return out  # Alg 2, line 11


def llava_preset(name: str) -> LlavaConfig:
    """Named model configurations; fresh objects each call, so callers may edit them."""
    from .llama import LLAMA_PRESETS
    from .vision import VISION_PRESETS

    presets = {
        # image_token_id 32000: the <image> token added after Vicuna's 32000; it never reaches the embedding table
        # the paper: CLIP ViT-L/14 at 224 px, layer -2 without CLS, one linear layer, Vicuna-13B
        "llava-v1-13b": ("vit-l-14", "vicuna-13b", "linear", 32000),
        "llava-v1-7b": ("vit-l-14", "vicuna-7b", "linear", 32000),
        # LLaVA-1.5: CLIP ViT-L/14 at 336 px (576 tokens), Linear-GELU-Linear projector, Vicuna-1.5
        "llava-1.5-7b": ("vit-l-14-336", "vicuna-7b", "mlp2x_gelu", 32000),
        "llava-1.5-13b": ("vit-l-14-336", "vicuna-13b", "mlp2x_gelu", 32000),
        # the embedded default: a tiny CLIP and LLaMA trained on the toy world in stage 0
        "toy": ("toy", "toy", "linear", 4),
    }
    if name not in presets:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(presets)}")
    vision, llm, projector, image_token_id = presets[name]
    vision_cfg = replace(VISION_PRESETS[vision])
    llm_cfg = replace(LLAMA_PRESETS[llm])
    return LlavaConfig(vision=vision_cfg, llm=llm_cfg, projector=projector, image_token_id=image_token_id)


def override(cfg, overrides: dict | None):
    """Apply dotted-key overrides such as {"llm.n_layers": 2} to a (nested) config dataclass, in place."""
    for key, value in (overrides or {}).items():
        *path, last = key.split(".")
        target = cfg
        for part in path:
            if not hasattr(target, part):
                raise ValueError(f"override {key!r}: {type(target).__name__} has no field {part!r}; fields: "
                                 f"{_field_names(target)}")
            target = getattr(target, part)
        if not hasattr(target, last):
            raise ValueError(f"override {key!r}: {type(target).__name__} has no field {last!r}; fields: "
                             f"{_field_names(target)}")
        if isinstance(target, LlavaConfig) and last == "projector" and value not in PROJECTOR_KINDS:
            raise ValueError(f"override {key!r}: projector kind {value!r} is not one of {PROJECTOR_KINDS}")
        setattr(target, last, value)
        if hasattr(target, "__post_init__"):  # re-validate the edited config
            target.__post_init__()
    return cfg


def _field_names(obj) -> list[str]:
    return [f.name for f in fields(obj)] if is_dataclass(obj) else sorted(vars(obj))
