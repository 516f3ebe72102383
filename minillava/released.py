"""What a released LLaVA folder says about itself, without reading a weight: its layout (an original-LLaVA folder
such as liuhaotian/llava-v1.5-7b, or a transformers Llava folder such as llava-hf/llava-1.5-7b-hf), the model
configuration (tower, projector kind, LLM), the chat template, the image preprocessing (pad-to-square or centre
crop) and its tokenizer (`read_released`); and its weights (`load_released`). Fine-tuning (`finetune`), its toy
walk-through (`finetune_toy`) and `minillava plan` all start from this description.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import load_hf_llava, load_llava
from .checkpoints.hf_llava import hf_llava_config
from .checkpoints.files import PathLike, read_json
from .checkpoints.hf_config import llama_config_from_hf, vision_config_from_hf
from .checkpoints.loaders import SAVED_TOWER, _preset_for
from .constants import IMAGE_TOKEN
from .model import Llava, LlavaConfig
from .tokenizer import TOKENIZER_FILES, load_tokenizer
from .training import IMAGE_ASPECT_RATIOS

TEMPLATE_KEY = "minillava_template"  # written into the config.json of folders minillava saves



# ---------------------------------------------------------------------------------------------------------------
# what a released folder says about itself


@dataclass
class Released:
    path: Path
    layout: str  # "original" (haotian-liu/LLaVA) or "transformers" (LlavaForConditionalGeneration)
    cfg: LlavaConfig
    template: str
    image_aspect_ratio: str  # the module's terms: "pad" or "square" (centre crop)
    tokenizer: Path | None  # the folder itself when it holds a tokenizer
    vision_weights: str | None  # a CLIP folder for the tower, when the original folder does not hold it

    @property
    def data_aspect_ratio(self) -> str:
        """The data module's name for the same preprocessing ("crop" for CLIP's resize + centre crop)."""
        return "pad" if self.image_aspect_ratio == "pad" else "crop"


def released_layout(path: PathLike) -> str:
    """"original" or "transformers"; anything else is an error naming the folder and what it lacks."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"init_from {path}: no such folder (a released LLaVA checkpoint folder)")
    config = read_json(path / "config.json")
    if isinstance(config.get("text_config"), dict) and isinstance(config.get("vision_config"), dict):
        return "transformers"
    if "mm_vision_tower" in config or "mm_hidden_size" in config or config.get("model_type") == "llava_llama":
        return "original"
    raise ValueError(f"init_from {path}: {path / 'config.json'} is neither an original LLaVA config (mm_vision_tower, "
                     f"mm_projector_type, model_type llava_llama) nor a transformers Llava config (text_config and "
                     f"vision_config, LlavaForConditionalGeneration); model_type is {config.get('model_type')!r}")


def official_template(name: str) -> str:
    """The official CLI's choice from a checkpoint's name (llava/serve/cli.py): "v1" in it -> the v1 template,
    otherwise v0 (llama-2 / mistral / mpt templates are not implemented here)."""
    lower = name.lower()
    if any(k in lower for k in ("llama-2", "llama_2", "mistral", "mpt", "34b")):
        raise ValueError(f"{name}: its template (llama-2 / mistral / mpt / chatml) is not implemented; "
                         f"minillava has v0, v1 and plain")
    return "v1" if "v1" in lower else "v0"


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def read_released(path: PathLike, vision_weights: PathLike | None = None, template: str | None = None) -> Released:
    """A released LLaVA folder's configuration, template, preprocessing and tokenizer, from its files' configs
    only (no weight is read). `vision_weights`: a transformers CLIP folder for an original folder whose tower
    (`mm_vision_tower`) is neither saved beside it nor a local folder; `template` overrides the inferred one."""
    path = Path(path)
    layout = released_layout(path)
    config = read_json(path / "config.json")
    where = str(path / "config.json")
    if layout == "transformers":
        cfg = hf_llava_config(config, where)
        inferred = config.get(TEMPLATE_KEY, "v1")  # llava-hf's 1.5 checkpoints: the v1 (Vicuna) template
        aspect = "square"
        pre = path / "preprocessor_config.json"
        if pre.is_file() and read_json(pre).get("do_pad"):
            aspect = "pad"
        elif "image_aspect_ratio" in config:
            aspect = config["image_aspect_ratio"]
    else:
        cfg = _original_config(path, config, where, vision_weights)
        inferred = config.get(TEMPLATE_KEY) or official_template(path.resolve().name)
        aspect = config.get("image_aspect_ratio", "square")
    if aspect not in IMAGE_ASPECT_RATIOS:
        raise ValueError(f"{where}: image_aspect_ratio={aspect!r} is not supported ({IMAGE_ASPECT_RATIOS})")
    return Released(path=path, layout=layout, cfg=cfg, template=template or inferred, image_aspect_ratio=aspect,
                    tokenizer=path if _has_tokenizer(path) else None,
                    vision_weights=None if vision_weights is None else str(vision_weights))


def _original_config(path: Path, config: dict, where: str, vision_weights: PathLike | None) -> LlavaConfig:
    """load_llava's reading of an original LLaVA config.json (and its tower's), without the weights."""
    if config.get("mm_use_im_start_end"):
        raise ValueError(f"{where}: mm_use_im_start_end=True (image start/end tokens) is not supported")
    select = config.get("mm_vision_select_feature", "patch")
    if select not in ("patch", "cls_patch"):
        raise ValueError(f"{where}: mm_vision_select_feature={select!r} is unknown")
    layer = config.get("mm_vision_select_layer", -2)
    llm = llama_config_from_hf(config, where)
    name = config.get("mm_vision_tower")
    tower_folder = next((Path(p) for p in (vision_weights, path / SAVED_TOWER, name)
                         if p is not None and Path(p).is_dir() and (Path(p) / "config.json").is_file()), None)
    if tower_folder is not None:
        tower = read_json(tower_folder / "config.json")
        vcfg = vision_config_from_hf(tower.get("vision_config", tower), layer, select, str(tower_folder))
    else:  # an official tower name (the weights are then looked up in the Hugging Face cache when loading)
        vcfg = _preset_for(name, layer, select, where)
    if vcfg.width != config.get("mm_hidden_size", vcfg.width):
        raise ValueError(f"{where}: mm_hidden_size={config['mm_hidden_size']}, but the vision tower is "
                         f"{vcfg.width} wide")
    return LlavaConfig(vision=vcfg, llm=llm, projector=config.get("mm_projector_type", "linear"),
                       image_token_id=config.get("image_token_index", llm.vocab_size))


def load_released(released: Released, dtype: torch.dtype | None = None) -> Llava:
    """The weights of a released folder, as our Llava (on the CPU, eval mode, the tower frozen)."""
    if released.layout == "transformers":
        model = load_hf_llava(released.path, dtype=dtype)
    else:
        model = load_llava(released.path, vision=released.vision_weights, dtype=dtype)
    found, wanted = model.cfg, released.cfg
    if (found.vision, found.llm, found.projector) != (wanted.vision, wanted.llm, wanted.projector):
        raise ValueError(f"{released.path}: the weights do not match the config read from it")
    model.cfg = wanted
    return model


def placeholder_id(released: Released, tokenizer: PathLike | None) -> int:
    """The `<image>` id: the tokenizer's (it adds <image> after the vocabulary when absent, as for Vicuna's), which
    must be the one the checkpoint was trained with."""
    if tokenizer is None:
        return released.cfg.image_token_id
    found = load_tokenizer(tokenizer).convert_tokens_to_ids(IMAGE_TOKEN)
    if found != released.cfg.image_token_id:
        raise ValueError(f"tokenizer {tokenizer}: <image> is id {found}, but {released.path} was trained with "
                         f"{released.cfg.image_token_id}: is it this checkpoint's tokenizer?")
    return found


def write_template(folder: Path, template: str) -> None:
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config[TEMPLATE_KEY] = template
    config_path.write_text(json.dumps(config, indent=2))
