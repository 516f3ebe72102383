"""Configurations in transformers' terms: HF Llama and CLIP vision config dicts to our configs and back.

`*_from_hf` refuses, naming the file and the field, whatever our modules do not implement (biases, other
activations, rope scaling, ...), instead of loading a model that would silently compute something else.
"""

from __future__ import annotations

from ..llama import LlamaConfig
from ..vision import VisionConfig


def llama_config_from_hf(cfg: dict, where: str = "config.json") -> LlamaConfig:
    """A transformers LlamaConfig dict (a Vicuna / LLaMA config.json) -> our LlamaConfig; refuses what we lack."""
    def refuse(field: str, value) -> ValueError:
        return ValueError(f"{where}: {field}={value!r} is not supported (LLaMA / Vicuna have the default)")

    if cfg.get("hidden_act", "silu") != "silu":
        raise refuse("hidden_act", cfg["hidden_act"])
    for field in ("attention_bias", "mlp_bias", "tie_word_embeddings"):
        if cfg.get(field):
            raise refuse(field, cfg[field])
    rope = cfg.get("rope_parameters") or {}
    if cfg.get("rope_scaling") or rope.get("rope_type", "default") != "default":
        raise refuse("rope_scaling", cfg.get("rope_scaling") or rope)
    _require(cfg, ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"), where)
    n_heads = cfg["num_attention_heads"]
    if cfg.get("head_dim") not in (None, cfg["hidden_size"] // n_heads):
        raise refuse("head_dim", cfg["head_dim"])
    return LlamaConfig(
        vocab_size=cfg["vocab_size"],
        d_model=cfg["hidden_size"],
        n_layers=cfg["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
        ffn_dim=cfg["intermediate_size"],
        max_seq_len=cfg.get("max_position_embeddings", 2048),
        rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
        norm_eps=cfg.get("rms_norm_eps", 1e-6),
    )


def _require(cfg: dict, fields: tuple[str, ...], where: str) -> None:
    missing = [f for f in fields if f not in cfg]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")


def llama_config_to_hf(cfg: LlamaConfig) -> dict:
    return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads, intermediate_size=cfg.ffn_dim,
                max_position_embeddings=cfg.max_seq_len, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps,
                hidden_act="silu", tie_word_embeddings=False)


def vision_config_from_hf(cfg: dict, feature_layer: int = -2, select: str = "patch",
                          where: str = "config.json") -> VisionConfig:
    """A transformers CLIPVisionConfig dict -> our VisionConfig."""
    act = cfg.get("hidden_act", "quick_gelu")
    if act not in ("quick_gelu", "gelu"):
        raise ValueError(f"{where}: vision hidden_act={act!r}; only 'quick_gelu' and 'gelu' are supported")
    if cfg.get("layer_norm_eps", 1e-5) != 1e-5:  # open_clip's LayerNorm uses 1e-5
        raise ValueError(f"{where}: vision layer_norm_eps={cfg['layer_norm_eps']} is not supported (1e-5 only)")
    _require(cfg, ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "image_size",
                   "patch_size"), where)
    width, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    return VisionConfig(image_size=cfg["image_size"], patch_size=cfg["patch_size"], width=width,
                        layers=cfg["num_hidden_layers"], head_width=width // heads,
                        mlp_ratio=cfg["intermediate_size"] / width, embed_dim=cfg.get("projection_dim", width),
                        quick_gelu=act == "quick_gelu", feature_layer=feature_layer, select=select)


def vision_config_to_hf(cfg: VisionConfig) -> dict:
    return dict(hidden_size=cfg.width, intermediate_size=int(cfg.width * cfg.mlp_ratio),
                num_hidden_layers=cfg.layers, num_attention_heads=cfg.width // cfg.head_width,
                image_size=cfg.image_size, patch_size=cfg.patch_size, projection_dim=cfg.embed_dim,
                hidden_act="quick_gelu" if cfg.quick_gelu else "gelu", layer_norm_eps=1e-5)
