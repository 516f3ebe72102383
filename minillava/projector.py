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
    # Alg 3, line 1: W starts from PyTorch's default (random) initialisation
    if kind == "linear":
        return nn.Linear(vision_dim, d_model)  # Alg 1, line 3: H_v = Z_v W^T + b
    if kind == "mlp2x_gelu":  # Alg 1, line 4: H_v = GELU(Z_v W_1^T + b_1) W_2^T + b_2
        return nn.Sequential(nn.Linear(vision_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))
    raise ValueError(f"projector kind {kind!r} is not one of {PROJECTOR_KINDS}")
