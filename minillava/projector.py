"""The trainable projection W from CLIP's feature space into the language model's embedding space.

Algorithm 1, second half: H_v = W Z_v. The paper (LLaVA v1) uses a single linear layer with bias; LLaVA-1.5 uses
two linear layers with a GELU between them ("mlp2x_gelu"). The module layout matches the original checkpoints'
keys: `mm_projector.weight` for linear, `mm_projector.0.*` / `mm_projector.2.*` for mlp2x_gelu.
"""

from __future__ import annotations

from torch import nn

PROJECTOR_KINDS = ("linear", "mlp2x_gelu")


def build_projector(kind: str, vision_dim: int, d_model: int) -> nn.Module:
    """(b, n, vision_dim) -> (b, n, d_model)."""
    if kind == "linear":
        return nn.Linear(vision_dim, d_model)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))
    raise ValueError(f"projector kind {kind!r} is not one of {PROJECTOR_KINDS}")
