"""The frozen CLIP vision tower of LLaVA (Algorithm 1, first half): image -> grid features Z_v.

LLaVA does not use CLIP's pooled image embedding. It takes the hidden states of the second-to-last transformer
block ("layer -2"), before the final LayerNorm and projection, and drops the CLS token: one feature vector per
14x14 patch (256 for ViT-L/14 at 224 px). We wrap open_clip's `VisionTransformer`, so real OpenAI / LAION CLIP
weights load unchanged and the toy tower of stage 0 is trained by open_clip's own ClipLoss.

Shapes: b images, c channels, n patch tokens, w tower width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from open_clip.model import CLIPVisionCfg, _build_vision_tower
from torch import nn


@dataclass
class VisionConfig:
    image_size: int = 224
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    head_width: int = 64  # open_clip: heads = width // head_width
    mlp_ratio: float = 4.0
    embed_dim: int = 768  # CLIP's joint embedding size (the output projection LLaVA never uses)
    quick_gelu: bool = True  # OpenAI's CLIP weights were trained with QuickGELU
    feature_layer: int = -2  # which block's output becomes Z_v (-1 = last block)
    select: str = "patch"  # "patch": drop CLS (the paper); "cls_patch": keep it

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if not -self.layers <= self.feature_layer < 0:
            raise ValueError(f"feature_layer={self.feature_layer} must be in [-{self.layers}, -1]")
        if self.select not in ("patch", "cls_patch"):
            raise ValueError(f"select={self.select!r}: expected 'patch' or 'cls_patch'")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """How many visual tokens one image becomes in the language model's sequence."""
        return self.num_patches + (self.select == "cls_patch")

    def open_clip_cfg(self) -> CLIPVisionCfg:
        return CLIPVisionCfg(
            layers=self.layers,
            width=self.width,
            head_width=self.head_width,
            mlp_ratio=self.mlp_ratio,
            patch_size=self.patch_size,
            image_size=self.image_size,
        )


VISION_PRESETS: dict[str, VisionConfig] = {
    "vit-l-14": VisionConfig(),  # the paper: CLIP ViT-L/14 at 224 px -> 256 tokens
    "vit-l-14-336": VisionConfig(image_size=336),  # LLaVA-1.5 -> 576 tokens
    "toy": VisionConfig(image_size=32, patch_size=8, width=128, layers=4, head_width=32, embed_dim=128,
                        quick_gelu=False),
}


def build_open_clip_vision(cfg: VisionConfig) -> nn.Module:
    """An open_clip VisionTransformer with the given shape (random weights)."""
    return _build_vision_tower(cfg.embed_dim, cfg.open_clip_cfg(), quick_gelu=cfg.quick_gelu)


class VisionTower(nn.Module):
    """CLIP ViT truncated at `feature_layer`: pixels (b, c, H, W) -> Z_v (b, n, w). Always frozen in LLaVA.

    The tower keeps every block (so real checkpoints load key for key) but drops CLIP's output projection `proj`,
    which LLaVA never uses: parameter counts then equal the reference models' (transformers' CLIPVisionModel has
    no projection either).
    """

    def __init__(self, cfg: VisionConfig, visual: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = build_open_clip_vision(cfg) if visual is None else visual
        self.visual.proj = None
        self.visual.requires_grad_(False)

    @property
    def block_index(self) -> int:
        """0-based index of the block whose output we take (-2 -> the second-to-last block)."""
        return self.cfg.layers + self.cfg.feature_layer

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(pixel_values)  # Alg 11, line 1: one w-vector per P x P patch, (b, w, g, g)
        x = rearrange(x, "b w gh gw -> b (gh gw) w")  # row-major patch grid
        cls = repeat(v.class_embedding, "w -> b 1 w", b=x.shape[0]).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # Alg 11, line 2: (b, 1 + n, w)
        x = v.ln_pre(x)  # Alg 11, line 3
        for block in v.transformer.resblocks[: self.block_index + 1]:  # Alg 11, line 4; Alg 1, line 1: l = L_v + 1 + s
            x = block(x)  # Alg 11, lines 5-6 (the blocks after feature_layer are never computed)
        # Alg 11, line 7: no ln_post, no projection: LLaVA reads the raw residual stream
        if self.cfg.select == "patch":
            x = x[:, 1:]  # Alg 1, line 2: drop the CLS token
        return x
