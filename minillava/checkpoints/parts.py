"""Where training starts: the three parts of a LLaVA (CLIP tower, projector W, LLM), each from a file, a folder or
a fresh initialisation, as the configuration they imply and one state dict in our key names.

What each `*_weights` argument may be:
- vision: our safetensors (the toy tower of stage 0), an open_clip checkpoint file (with its architecture's name,
  e.g. "ViT-L-14-quickgelu" for OpenAI's CLIP ViT-L/14, the paper's tower), or a transformers CLIP folder
  (openai/clip-vit-large-patch14, -336 for LLaVA-1.5);
- llm: our safetensors, or an HF Llama / Vicuna folder (config.json + safetensors or .bin shards), or one weight
  file inside such a folder;
- projector: our safetensors, or the original stage-1 `mm_projector.bin` (or its safetensors).
A folder's config.json decides that part's shape (nothing is declared twice); the preset supplies the rest.
"""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from pathlib import Path

import torch
from torch import nn

from ..llama import Llama, LlamaConfig
from ..model import Llava, LlavaConfig, llava_preset, override
from ..projector import build_projector
from ..vision import VisionTower
from .files import PathLike, open_safetensors, read_json, read_weights
from .hf_config import llama_config_from_hf, vision_config_from_hf
from .loaders import load_hf_clip_vision, load_hf_llama, load_open_clip_vision, open_clip_vision_config, projector_state

log = logging.getLogger(__name__)

# LlamaConfig fields that are switches of our implementation, not properties of a checkpoint
_LLM_SWITCHES = ("pack_tokens", "share_prefix")


def hf_llama_folder(path: PathLike | None) -> Path | None:
    """The HF Llama folder that `path` is or lies in (a weight file next to a config.json), else None (ours)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"llm_weights {path}: a folder without config.json is not an HF Llama folder")
        return path
    if not path.is_file():
        raise FileNotFoundError(f"llm_weights {path} does not exist")
    if (path.parent / "config.json").is_file() and _has_hf_llama_keys(path):
        return path.parent
    return None


def _has_hf_llama_keys(file: Path) -> bool:
    if file.suffix != ".safetensors":
        return True  # a .bin inside a model folder: only HF checkpoints are .bin
    with open_safetensors(file) as f:
        return any(k.startswith("model.") for k in f.keys())


def llava_config(preset: str, overrides: dict | None = None, vision_weights: PathLike | None = None,
                 vision_name: str | None = None, llm_weights: PathLike | None = None) -> LlavaConfig:
    """The preset, with the LLM's and the tower's shapes taken from their checkpoints where those say it, then the
    overrides (dotted keys, as `model.override`)."""
    cfg = llava_preset(preset)
    if (folder := hf_llama_folder(llm_weights)) is not None:
        llm = llama_config_from_hf(read_json(folder / "config.json"), str(folder / "config.json"))
        preset_llm, cfg.llm = cfg.llm, replace(llm, **{k: getattr(cfg.llm, k) for k in _LLM_SWITCHES})
        _note_differences("llm", preset_llm, cfg.llm, folder)
    if vision_name is not None:
        if vision_weights is None:
            raise ValueError(f"vision_name={vision_name!r} needs vision_weights (the open_clip checkpoint file)")
        cfg.vision = open_clip_vision_config(vision_name, None, cfg.vision.feature_layer, cfg.vision.select)
    elif vision_weights is not None and Path(vision_weights).is_dir():
        config = read_json(Path(vision_weights) / "config.json")
        cfg.vision = vision_config_from_hf(config.get("vision_config", config), cfg.vision.feature_layer,
                                           cfg.vision.select, str(vision_weights))
    return override(cfg, overrides)


def _note_differences(part: str, preset, found, where: Path) -> None:
    diff = {f.name: (getattr(preset, f.name), getattr(found, f.name)) for f in fields(found)
            if getattr(preset, f.name) != getattr(found, f.name)}
    if diff:
        log.info("%s shape from %s, not the preset: %s", part, where, diff)


def initial_state(cfg: LlavaConfig, vision_weights: PathLike | None = None, vision_name: str | None = None,
                  llm_weights: PathLike | None = None, projector_weights: PathLike | None = None,
                  ) -> dict[str, torch.Tensor]:
    """The whole model's starting state dict (the keys of `Llava(cfg).state_dict()`), on the CPU.

    Parts with a file are read from it, shape-checked key by key; parts without one are freshly initialised, in the
    order tower, projector, LLM, from torch's global generator (seed it for a reproducible start). Tensors keep the
    checkpoint's dtype (the trainer casts).
    """
    with torch.device("meta"):
        shapes = Llava(cfg)
    state: dict[str, torch.Tensor] = {}
    state |= _prefixed("vision.", _vision_state(cfg, shapes.vision, vision_weights, vision_name))
    state |= _prefixed("projector.", _projector_state(cfg, shapes.projector, projector_weights))
    state |= _prefixed("llm.", _llm_state(cfg.llm, shapes.llm, llm_weights))
    return state


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def _fresh(module_factory) -> dict[str, torch.Tensor]:
    with torch.device("cpu"):
        return module_factory().state_dict()


def _vision_state(cfg: LlavaConfig, meta: VisionTower, path: PathLike | None, name: str | None):
    if path is None:
        return _fresh(lambda: VisionTower(cfg.vision))
    if name is not None:
        return load_open_clip_vision(name, path, cfg.vision.quick_gelu, cfg.vision.feature_layer,
                                     cfg.vision.select).state_dict()
    if Path(path).is_dir():
        return load_hf_clip_vision(path, cfg.vision.feature_layer, cfg.vision.select).state_dict()
    return _prefixed("visual.", _ours(meta.visual, path, "vision"))


def _projector_state(cfg: LlavaConfig, meta: nn.Module, path: PathLike | None):
    if path is None:
        return _fresh(lambda: build_projector(cfg.projector, cfg.vision.width, cfg.llm.d_model))
    return projector_state(cfg.projector, meta, path)


def _llm_state(cfg: LlamaConfig, meta: Llama, path: PathLike | None):
    if path is None:
        return _fresh(lambda: Llama(cfg))
    folder = hf_llama_folder(path)
    if folder is not None:
        return load_hf_llama(folder).state_dict()
    return _ours(meta, path, "llm")


def _ours(meta: nn.Module, path: PathLike, what: str) -> dict[str, torch.Tensor]:
    """Our own safetensors weights of one part, checked against the part's keys and shapes."""
    return read_weights(meta, path, what)
