"""Loaders for real checkpoints: HF Llama / Vicuna (both ways), CLIP vision towers (open_clip and transformers),
original LLaVA folders (haotian-liu/LLaVA) and their stage-1 projector files (`mm_projector.bin`).

transformers' Llava, which holds all three parts in one checkpoint, is in `hf_llava`.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..llama import Llama
from ..model import Llava, LlavaConfig
from ..tokenizer import local_tokenizer
from ..vision import VISION_PRESETS, VisionConfig, VisionTower
from .files import CheckpointFiles, PathLike, read_json, writing
from .hf_config import llama_config_from_hf, llama_config_to_hf, vision_config_from_hf, vision_config_to_hf
from .keymaps import (
    CLIP_NOT_VISION_KEYS,
    UNUSED_KEYS,
    Rule,
    assign,
    clip_vision_rules,
    convert,
    expected_shapes,
    export_state,
    llama_rules,
    original_llava_rules,
    prefixed,
    projector_rules,
)


def load_hf_llama(path: PathLike, dtype: torch.dtype | None = None) -> Llama:
    """An HF Llama folder (Vicuna, LLaMA: config.json + safetensors or .bin shards) -> our Llama.

    The folder's tokenizer loads with `minillava.tokenizer.load_tokenizer(path)`.
    """
    path = Path(path)
    cfg = llama_config_from_hf(read_json(path / "config.json"), str(path / "config.json"))
    with torch.device("meta"):
        model = Llama(cfg)
    state = convert(llama_rules(cfg), CheckpointFiles(path), expected_shapes(model), str(path), dtype=dtype)
    return assign(model, state)


def save_hf_llama(model: Llama, path: PathLike) -> None:
    """Write our Llama as an HF Llama folder (config.json + model.safetensors) that LlamaForCausalLM loads."""
    path = Path(path)
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
        config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **llama_config_to_hf(model.cfg)}
        (path / "config.json").write_text(json.dumps(config, indent=2))
        save_file(export_state(llama_rules(model.cfg), model.state_dict()), str(path / "model.safetensors"),
                  metadata={"format": "pt"})


def open_clip_vision_config(name: str, quick_gelu: bool | None = None, feature_layer: int = -2,
                            select: str = "patch") -> VisionConfig:
    """An open_clip model name (e.g. "ViT-L-14", "ViT-L-14-336") -> our VisionConfig, without any weights."""
    import open_clip

    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip model {name!r}; known names: open_clip.list_models()")
    v = model_cfg["vision_cfg"]
    if isinstance(v.get("layers"), (list, tuple)) or v.get("timm_model_name"):
        raise ValueError(f"open_clip model {name!r} is not a plain ViT (LLaVA uses CLIP ViT-L/14)")
    return VisionConfig(image_size=v["image_size"], patch_size=v["patch_size"], width=v["width"],
                        layers=v["layers"], head_width=v.get("head_width", 64), mlp_ratio=v.get("mlp_ratio", 4.0),
                        embed_dim=model_cfg["embed_dim"],
                        quick_gelu=model_cfg.get("quick_gelu", False) if quick_gelu is None else quick_gelu,
                        feature_layer=feature_layer, select=select)


def resolve_open_clip_file(name: str, pretrained: PathLike) -> Path:
    """`pretrained` as a local file, or as an open_clip tag ("openai", "laion2b_s32b_b82k") already in the
    Hugging Face cache. Nothing is downloaded."""
    if Path(pretrained).is_file():
        return Path(pretrained)
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import get_pretrained_cfg

    hub = get_pretrained_cfg(name, str(pretrained)).get("hf_hub", "")
    if hub:
        repo_id = hub.rstrip("/")
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo_id, filename)
            if isinstance(found, str):
                return Path(found)
    raise FileNotFoundError(f"open_clip {name} pretrained={pretrained!r}: not a file, and not a pretrained tag "
                            f"found in the Hugging Face cache (nothing is downloaded)")


def load_open_clip_vision(name: str, pretrained: PathLike, quick_gelu: bool | None = None,
                          feature_layer: int = -2, select: str = "patch") -> VisionTower:
    """open_clip weights (a whole CLIP or its `visual` part) -> our frozen VisionTower.

    The architecture comes from the model name. OpenAI's CLIP was trained with QuickGELU: pass a "-quickgelu"
    name or `quick_gelu=True` for its weights (a cached tag "openai" sets it), or the features silently degrade.
    """
    from open_clip.pretrained import get_pretrained_cfg

    if quick_gelu is None and not Path(pretrained).is_file():
        quick_gelu = get_pretrained_cfg(name, str(pretrained)).get("quick_gelu")
    cfg = open_clip_vision_config(name, quick_gelu, feature_layer, select)
    file = resolve_open_clip_file(name, pretrained)
    files = CheckpointFiles(file)
    whole_clip = any(k.startswith("visual.") for k in files)
    with torch.device("meta"):
        tower = VisionTower(cfg)
    rules = [Rule(k, ("visual." + k if whole_clip else k,)) for k in expected_shapes(tower.visual)]
    # a whole CLIP also holds the text tower and the output projection `proj`, which LLaVA does not use
    unused = (lambda k: not k.startswith("visual.") or k == "visual.proj") if whole_clip else (lambda k: k == "proj")
    state = convert(rules, files, expected_shapes(tower.visual), f"{file} (open_clip {name})", unused)
    assign(tower.visual, state)
    return tower.eval()


def load_hf_clip_vision(path: PathLike, feature_layer: int = -2, select: str = "patch",
                        dtype: torch.dtype | None = None) -> VisionTower:
    """A transformers CLIP folder (CLIPModel such as openai/clip-vit-large-patch14-336, or CLIPVisionModel)."""
    path = Path(path)
    config = read_json(path / "config.json")
    cfg = vision_config_from_hf(config.get("vision_config", config), feature_layer, select, str(path))
    files = CheckpointFiles(path, rename=lambda k: k.removeprefix("vision_model."))
    with torch.device("meta"):
        tower = VisionTower(cfg)
    unused = lambda k: bool(UNUSED_KEYS.search(k) or CLIP_NOT_VISION_KEYS.match(k))  # noqa: E731
    state = convert(clip_vision_rules(cfg), files, expected_shapes(tower.visual), str(path), unused, dtype)
    assign(tower.visual, state)
    return tower.eval()


def _projector_kind(keys: list[str], where: str) -> str:
    names = {k.rsplit(".", 1)[0] if "." in k else "" for k in keys}
    if names == {""}:
        return "linear"
    if names == {"0", "2"}:
        return "mlp2x_gelu"
    raise ValueError(f"{where}: projector keys {sorted(keys)[:4]} are neither linear nor mlp2x_gelu")


def projector_state(kind: str, meta: nn.Module, path: PathLike) -> dict[str, torch.Tensor]:
    """A stage-1 projector file -> the state dict of a `kind` projector (`meta`: one, for keys and shapes).

    Reads the original `mm_projector.bin` (keys `model.mm_projector.*`) as well as our own projector.safetensors
    (bare keys); the file's kind (linear or mlp2x_gelu) must be `kind`.
    """
    files = CheckpointFiles(path, rename=lambda k: re.sub(r"^(model\.)?mm_projector\.", "", k))
    found = _projector_kind(list(files), str(path))
    if found != kind:
        raise ValueError(f"{path}: a {found} projector, but the model's projector is {kind}")
    return convert(projector_rules(kind), files, expected_shapes(meta), str(path))


def load_projector(model: Llava, path: PathLike) -> None:
    """A stage-1 projector file (original `mm_projector.bin` or ours) into `model.projector`, in place."""
    model.projector.load_state_dict(projector_state(model.cfg.projector, model.projector, path))


def load_llava(path: PathLike, vision: VisionTower | PathLike | None = None, projector: PathLike | None = None,
               dtype: torch.dtype | None = None) -> Llava:
    """An original LLaVA checkpoint folder (liuhaotian/llava-v1.5-13b and the like) -> our Llava.

    The folder holds the merged LLM and `model.mm_projector.*`; its config.json names the vision tower
    (`mm_vision_tower`), which is loaded from `vision` (a VisionTower, e.g. from `load_open_clip_vision`, or a
    transformers CLIP folder), else from a local folder or the Hugging Face cache under that name, unless the
    checkpoint itself holds the tower (`model.vision_tower.vision_tower.*`). `projector` replaces the
    checkpoint's projector with a stage-1 file. The placeholder id is the first id after the vocabulary.
    """
    path = Path(path)
    where = str(path / "config.json")
    config = read_json(path / "config.json")
    if config.get("mm_use_im_start_end"):
        raise ValueError(f"{where}: mm_use_im_start_end=True (image start/end tokens) is not supported")
    select = {"patch": "patch", "cls_patch": "cls_patch"}.get(config.get("mm_vision_select_feature", "patch"))
    if select is None:
        raise ValueError(f"{where}: mm_vision_select_feature={config['mm_vision_select_feature']!r} is unknown")
    feature_layer = config.get("mm_vision_select_layer", -2)
    kind = config.get("mm_projector_type", "linear")
    llm = llama_config_from_hf(config, where)

    # some checkpoints (a tuned vision tower) carry the tower as HF CLIP keys under this prefix
    tower_prefix = "model.vision_tower.vision_tower."
    files = CheckpointFiles(path, rename=lambda k: re.sub(r"^model\.vision_tower\.vision_tower\.vision_model\.",
                                                          tower_prefix, k))
    in_checkpoint = any(k.startswith(tower_prefix) for k in files)
    if isinstance(vision, VisionTower):
        tower = vision
        tower.cfg = replace(vision.cfg, feature_layer=feature_layer, select=select)
    elif vision is not None:
        tower = load_hf_clip_vision(vision, feature_layer, select, dtype)
    elif (path / SAVED_TOWER).is_dir():  # saved with the checkpoint by `save_llava`
        tower = load_hf_clip_vision(path / SAVED_TOWER, feature_layer, select, dtype)
    elif not in_checkpoint:
        name = config.get("mm_vision_tower")
        tower = load_hf_clip_vision(_local_hf_folder(name, where), feature_layer, select, dtype)
    else:
        tower = None
    vcfg = tower.cfg if tower is not None else _preset_for(config.get("mm_vision_tower"), feature_layer, select, where)
    if vcfg.width != config.get("mm_hidden_size", vcfg.width):
        raise ValueError(f"{where}: mm_hidden_size={config['mm_hidden_size']}, but the vision tower is {vcfg.width} wide")
    # the placeholder is the first id after the vocabulary, unless the config names another (`save_llava` writes
    # image_token_index for a model whose <image> lies inside its vocabulary, as one converted from transformers')
    cfg = LlavaConfig(vision=vcfg, llm=llm, projector=kind, image_token_id=config.get("image_token_index",
                                                                                         llm.vocab_size))
    with torch.device("meta"):
        model = Llava(cfg)
    rules = original_llava_rules(cfg)
    if tower is None:  # the tower comes from the checkpoint itself
        rules += prefixed(clip_vision_rules(vcfg), "vision.visual.", tower_prefix)
        ignore = lambda k: bool(UNUSED_KEYS.search(k))  # noqa: E731
    else:  # the tower comes from elsewhere; a copy in the checkpoint is not used
        model.vision = tower
        ignore = lambda k: bool(UNUSED_KEYS.search(k)) or k.startswith(tower_prefix)  # noqa: E731
    expected = {k: v for k, v in expected_shapes(model).items() if tower is None or not k.startswith("vision.")}
    state = convert(rules, files, expected, str(path), ignore, dtype)
    if tower is not None:
        state.update({"vision." + k: v for k, v in tower.state_dict().items()})
    assign(model, state)
    model.vision.requires_grad_(False)
    if projector is not None:
        load_projector(model, projector)
    return model.eval()


SAVED_TOWER = "vision_tower"  # the subfolder where `save_llava` writes the tower (a transformers CLIP folder)
_OFFICIAL_TOWERS = {"vit-l-14": "openai/clip-vit-large-patch14", "vit-l-14-336": "openai/clip-vit-large-patch14-336"}


def save_llava(path: PathLike, cfg: LlavaConfig, state: dict[str, torch.Tensor], tokenizer: PathLike | None = None,
               dtype: torch.dtype | None = None, image_aspect_ratio: str = "square") -> Path:
    """Write a LLaVA as an original-LLaVA folder (haotian-liu/LLaVA's layout) that `load_llava` reads back:
    config.json (the HF Llama config + the `mm_*` keys), model.safetensors (HF Llama keys + `model.mm_projector.*`),
    the tokenizer when given, and the frozen tower as a transformers CLIP folder in `vision_tower/`.

    `state` is the whole model's state dict in our key names (a sharded run gathers it first); `dtype` casts
    floating tensors on the way out (bf16 runs save bf16, as the official code does).
    """
    import transformers

    path = Path(path)
    tok = local_tokenizer(tokenizer) if tokenizer is not None else None  # a bad path fails before any write
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
        cast = (lambda t: t.to(dtype) if dtype is not None and t.is_floating_point() else t)  # noqa: E731
        weights = {k: cast(v) for k, v in export_state(original_llava_rules(cfg), state).items()}
        save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
        tower_state = {k.removeprefix("vision.visual."): v for k, v in state.items()
                       if k.startswith("vision.visual.")}
        tower = {"vision_model." + k: cast(v)
                 for k, v in export_state(clip_vision_rules(cfg.vision), tower_state).items()}
        (path / SAVED_TOWER).mkdir(exist_ok=True)
        tower_config = transformers.CLIPVisionConfig(**vision_config_to_hf(cfg.vision))
        tower_config.architectures = ["CLIPVisionModel"]
        tower_config.save_pretrained(path / SAVED_TOWER)
        save_file(tower, str(path / SAVED_TOWER / "model.safetensors"), metadata={"format": "pt"})
        vcfg = cfg.vision
        preset = next((name for name, p in VISION_PRESETS.items()
                       if replace(p, feature_layer=vcfg.feature_layer, select=vcfg.select) == vcfg), None)
        config = {
            "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", **llama_config_to_hf(cfg.llm),
            "mm_vision_tower": _OFFICIAL_TOWERS.get(preset, SAVED_TOWER),
            "mm_hidden_size": cfg.vision.width,
            "mm_projector_type": cfg.projector,
            "mm_vision_select_layer": cfg.vision.feature_layer,
            "mm_vision_select_feature": cfg.vision.select,
            "mm_use_im_start_end": False,
            "mm_use_im_patch_token": False,
            "mm_patch_merge_type": "flat",
            "image_aspect_ratio": image_aspect_ratio,
            "use_mm_proj": True,
            "torch_dtype": str(dtype or torch.float32).removeprefix("torch."),
        }
        if cfg.image_token_id != cfg.llm.vocab_size:  # <image> inside the vocabulary (a transformers Llava's)
            config["image_token_index"] = cfg.image_token_id
        (path / "config.json").write_text(json.dumps(config, indent=2))
        if tok is not None:
            tok.save_pretrained(path)
    return path


def _local_hf_folder(name: str | None, where: str) -> Path:
    """A vision tower named in a config: a local folder, or a snapshot already in the Hugging Face cache."""
    if name and Path(name).is_dir():
        return Path(name)
    if name:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(name, local_files_only=True))
        except Exception:  # any miss: not in the cache; the message below says what to do
            pass
    raise FileNotFoundError(f"{where}: vision tower {name!r} is neither a local folder nor in the Hugging Face "
                            f"cache; pass vision= (load_open_clip_vision(...) or a transformers CLIP folder)")


def _preset_for(name: str | None, feature_layer: int, select: str, where: str) -> VisionConfig:
    presets = {"openai/clip-vit-large-patch14": "vit-l-14", "openai/clip-vit-large-patch14-336": "vit-l-14-336"}
    if name not in presets:
        raise ValueError(f"{where}: unknown mm_vision_tower {name!r}; pass vision=")
    return replace(VISION_PRESETS[presets[name]], feature_layer=feature_layer, select=select)
