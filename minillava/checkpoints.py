"""Real checkpoints in and out: explicit key maps with shape checks, and the loaders built on them.

Formats (their key names, as written on disk):
- HF Llama / Vicuna (`LlamaForCausalLM`): `model.embed_tokens.weight`, `model.layers.N.*`, `model.norm.weight`,
  `lm_head.weight`; a folder of safetensors or .bin shards (with an index), config.json and a tokenizer.
- open_clip CLIP: `visual.conv1.weight`, `visual.transformer.resblocks.N.*`, ... (our VisionTower holds the same
  module, so these map one to one); the text tower and `visual.proj` are not part of LLaVA.
- HF CLIP vision (`CLIPVisionModel` / `CLIPModel`): `[vision_model.]embeddings.*`, `encoder.layers.N.*`, with q/k/v
  as three Linear layers where open_clip has one fused `in_proj`.
- original LLaVA (haotian-liu/LLaVA): HF Llama keys + `model.mm_projector.{weight,bias}` (linear) or
  `model.mm_projector.{0,2}.*` (mlp2x_gelu); stage 1 saves only the projector (`mm_projector.bin`).
- transformers' Llava: `vision_tower.*` (a CLIPVisionModel), `multi_modal_projector.linear_{1,2}.*`,
  `language_model.model.*`, `language_model.lm_head.weight` on disk; `model.vision_tower.*`, ... in memory.

Every load goes through `Rule`s: each key of our module is filled from named keys of the file, every file key is
used exactly once (or is on an explicit list of keys LLaVA does not use), and every shape is checked, so a wrong
checkpoint fails with a message naming the file and the key instead of loading garbage. Files are read with
safetensors or `torch.load(weights_only=True)`: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .llama import Llama, LlamaConfig, RotaryEmbedding
from .model import Llava, LlavaConfig
from .vision import VISION_PRESETS, VisionConfig, VisionTower

PathLike = str | Path


# ----------------------------------------------------------------------------------------------------------------
# Reading tensors safely


class CheckpointFiles(Mapping[str, torch.Tensor]):
    """The tensors of a checkpoint file or folder (shards + index), read lazily, keys renamed by `rename`.

    safetensors files are memory-mapped tensor by tensor; .bin/.pt files are read with `weights_only=True`.
    """

    def __init__(self, path: PathLike, rename: Callable[[str], str] = lambda k: k) -> None:
        self.path = Path(path)
        self.files = weight_files(self.path)
        self._where: dict[str, tuple[Path, str]] = {}  # our key name -> (file, key in that file)
        self._pickled: dict[Path, dict[str, torch.Tensor]] = {}
        for file in self.files:
            for key in self._file_keys(file):
                name = rename(key)
                if name in self._where:
                    raise ValueError(f"{self.path}: key {key!r} appears twice (as {name!r}) in {file.name} and "
                                     f"{self._where[name][0].name}")
                self._where[name] = (file, key)

    def _file_keys(self, file: Path) -> list[str]:
        if file.suffix == ".safetensors":
            with safe_open(str(file), "pt") as f:
                return list(f.keys())
        return list(self._load_pickled(file))

    def _load_pickled(self, file: Path) -> dict[str, torch.Tensor]:
        if file not in self._pickled:
            try:
                try:
                    obj = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
                    obj = torch.load(file, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                raise ValueError(f"{file}: not a plain state dict of tensors, refused without unpickling it (a "
                                 f"TorchScript file such as OpenAI's ViT-L-14.pt is not supported; use the "
                                 f"open_clip or safetensors release): {exc}") from None
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # a training checkpoint
                obj = obj["state_dict"]
            if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
                raise ValueError(f"{file}: expected a dict of tensors (a state dict)")
            self._pickled[file] = obj
        return self._pickled[file]

    def __getitem__(self, name: str) -> torch.Tensor:
        file, key = self._where[name]
        if file.suffix == ".safetensors":
            with safe_open(str(file), "pt") as f:
                return f.get_tensor(key)
        return self._load_pickled(file)[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __repr__(self) -> str:
        return str(self.path)


def weight_files(path: Path) -> list[Path]:
    """The weight files of a checkpoint: the file itself, the shards an index names, or the files in a folder.

    safetensors win over .bin when a folder has both (hub repositories often ship both).
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [s for s in shards if not (path / s).exists()]
            if missing:
                raise FileNotFoundError(f"{index}: shard {missing[0]} is missing")
            return [path / s for s in shards]
    for pattern in ("*.safetensors", "*.bin"):
        files = sorted(path.glob(pattern))
        if files:
            return files
    raise FileNotFoundError(f"{path}: no weight files (*.safetensors or *.bin)")


def read_json(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------------------------
# Key maps


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
_UNUSED = re.compile(r"(^|\.)rotary_emb\.inv_freq$|(^|\.)embeddings\.position_ids$")
_CLIP_NOT_VISION = re.compile(r"^(text_model\.|visual_projection\.|text_projection\.|logit_scale$)")


def convert(
    rules: list[Rule],
    source: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    where: str,
    unused: Callable[[str], bool] = lambda k: bool(_UNUSED.search(k)),
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
                raise KeyError(f"{where}: missing key {key!r} (needed for {rule.ours})")
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
        if isinstance(module, Llama):
            module.rotary = RotaryEmbedding(module.cfg.head_dim, module.cfg.rope_theta)
    return model


def _expected(module: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------------------------------------------
# Configurations


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


# ----------------------------------------------------------------------------------------------------------------
# Loaders


def load_hf_llama(path: PathLike, dtype: torch.dtype | None = None) -> Llama:
    """An HF Llama folder (Vicuna, LLaMA: config.json + safetensors or .bin shards) -> our Llama.

    The folder's tokenizer loads with `minillava.tokenizer.load_tokenizer(path)`.
    """
    path = Path(path)
    cfg = llama_config_from_hf(read_json(path / "config.json"), str(path / "config.json"))
    with torch.device("meta"):
        model = Llama(cfg)
    state = convert(llama_rules(cfg), CheckpointFiles(path), _expected(model), str(path), dtype=dtype)
    return assign(model, state)


def save_hf_llama(model: Llama, path: PathLike) -> None:
    """Write our Llama as an HF Llama folder (config.json + model.safetensors) that LlamaForCausalLM loads."""
    path = Path(path)
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
    rules = [Rule(k, ("visual." + k if whole_clip else k,)) for k in _expected(tower.visual)]
    # a whole CLIP also holds the text tower and the output projection `proj`, which LLaVA does not use
    unused = (lambda k: not k.startswith("visual.") or k == "visual.proj") if whole_clip else (lambda k: k == "proj")
    state = convert(rules, files, _expected(tower.visual), f"{file} (open_clip {name})", unused)
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
    unused = lambda k: bool(_UNUSED.search(k) or _CLIP_NOT_VISION.match(k))  # noqa: E731
    state = convert(clip_vision_rules(cfg), files, _expected(tower.visual), str(path), unused, dtype)
    assign(tower.visual, state)
    return tower.eval()


def _projector_kind(keys: list[str], where: str) -> str:
    names = {k.rsplit(".", 1)[0] if "." in k else "" for k in keys}
    if names == {""}:
        return "linear"
    if names == {"0", "2"}:
        return "mlp2x_gelu"
    raise ValueError(f"{where}: projector keys {sorted(keys)[:4]} are neither linear nor mlp2x_gelu")


def load_projector(model: Llava, path: PathLike) -> None:
    """A stage-1 projector file into `model.projector`, in place.

    Reads the original `mm_projector.bin` (keys `model.mm_projector.*`) as well as our own projector.safetensors
    (bare keys); the file's kind (linear or mlp2x_gelu) must be the model's.
    """
    files = CheckpointFiles(path, rename=lambda k: re.sub(r"^(model\.)?mm_projector\.", "", k))
    kind = _projector_kind(list(files), str(path))
    if kind != model.cfg.projector:
        raise ValueError(f"{path}: a {kind} projector, but the model's projector is {model.cfg.projector}")
    state = convert(projector_rules(kind), files, _expected(model.projector), str(path))
    model.projector.load_state_dict(state)


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
    elif not in_checkpoint:
        name = config.get("mm_vision_tower")
        tower = load_hf_clip_vision(_local_hf_folder(name, where), feature_layer, select, dtype)
    else:
        tower = None
    vcfg = tower.cfg if tower is not None else _preset_for(config.get("mm_vision_tower"), feature_layer, select, where)
    if vcfg.width != config.get("mm_hidden_size", vcfg.width):
        raise ValueError(f"{where}: mm_hidden_size={config['mm_hidden_size']}, but the vision tower is {vcfg.width} wide")
    cfg = LlavaConfig(vision=vcfg, llm=llm, projector=kind, image_token_id=llm.vocab_size)
    with torch.device("meta"):
        model = Llava(cfg)
    rules = original_llava_rules(cfg)
    if tower is None:  # the tower comes from the checkpoint itself
        rules += prefixed(clip_vision_rules(vcfg), "vision.visual.", tower_prefix)
        ignore = lambda k: bool(_UNUSED.search(k))  # noqa: E731
    else:  # the tower comes from elsewhere; a copy in the checkpoint is not used
        model.vision = tower
        ignore = lambda k: bool(_UNUSED.search(k)) or k.startswith(tower_prefix)  # noqa: E731
    expected = {k: v for k, v in _expected(model).items() if tower is None or not k.startswith("vision.")}
    state = convert(rules, files, expected, str(path), ignore, dtype)
    if tower is not None:
        state.update({"vision." + k: v for k, v in tower.state_dict().items()})
    assign(model, state)
    model.vision.requires_grad_(False)
    if projector is not None:
        load_projector(model, projector)
    return model.eval()


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


# ----------------------------------------------------------------------------------------------------------------
# transformers' Llava, both directions


def load_hf_llava(path_or_model, dtype: torch.dtype | None = None) -> Llava:
    """A transformers LlavaForConditionalGeneration (a saved folder, or the model object) -> our Llava."""
    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        config = read_json(path / "config.json")
        source: Mapping[str, torch.Tensor] = CheckpointFiles(path, rename=hf_llava_key)
        where = str(path)
    else:
        config = path_or_model.config.to_dict()
        source = {hf_llava_key(k): v for k, v in path_or_model.state_dict().items()}
        where = type(path_or_model).__name__
    layer = config.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ValueError(f"{where}: vision_feature_layer={layer!r}: only one feature layer is supported")
    strategy = config.get("vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
        raise ValueError(f"{where}: vision_feature_select_strategy={strategy!r} is unknown")
    if config.get("projector_hidden_act", "gelu") != "gelu" or not config.get("multimodal_projector_bias", True):
        raise ValueError(f"{where}: only a projector with biases and GELU (mlp2x_gelu) is supported")
    vcfg = vision_config_from_hf(config["vision_config"], layer, "patch" if strategy == "default" else "cls_patch",
                                 where)
    llm = llama_config_from_hf(config["text_config"], where)
    image_token_id = config.get("image_token_id", config.get("image_token_index"))
    cfg = LlavaConfig(vision=vcfg, llm=llm, projector="mlp2x_gelu", image_token_id=image_token_id)
    with torch.device("meta"):
        model = Llava(cfg)
    state = convert(hf_llava_rules(cfg), source, _expected(model), where, dtype=dtype)
    assign(model, state)
    model.vision.requires_grad_(False)
    return model.eval()


def export_hf_llava(model: Llava, path: PathLike, tokenizer=None) -> Path:
    """Write our Llava as a transformers LlavaForConditionalGeneration folder (config.json + model.safetensors,
    and the tokenizer if given), in the key names of the published llava-hf checkpoints.

    transformers embeds the placeholder id with the LLM's own table, so when it lies outside the vocabulary the
    exported embedding and unembedding gain zero rows up to it: logits over the original vocabulary are unchanged.
    """
    import transformers

    cfg = model.cfg
    if cfg.projector != "mlp2x_gelu":
        raise ValueError(
            f"cannot export a {cfg.projector!r} projector: transformers' LlavaForConditionalGeneration always "
            "applies two linear layers with a GELU between them (linear_1, linear_2), which a single linear W "
            "cannot be written into exactly; only projector='mlp2x_gelu' models export")
    state = export_state(hf_llava_rules(cfg), model.state_dict())
    vocab = max(cfg.llm.vocab_size, cfg.image_token_id + 1)
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        extra = vocab - state[key].shape[0]
        state[key] = torch.cat([state[key], state[key].new_zeros(extra, state[key].shape[1])])
    on_disk = (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
               ("model.vision_tower.", "vision_tower.vision_model."),
               ("model.multi_modal_projector.", "multi_modal_projector."))
    state = {rename_prefix(k, on_disk): v for k, v in state.items()}
    hf_config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(**vision_config_to_hf(cfg.vision)),
        text_config=transformers.LlamaConfig(**{**llama_config_to_hf(cfg.llm), "vocab_size": vocab}),
        image_token_id=cfg.image_token_id,
        image_seq_length=cfg.num_image_tokens,
        vision_feature_layer=cfg.vision.feature_layer,
        vision_feature_select_strategy="default" if cfg.vision.select == "patch" else "full",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
    hf_config.architectures = ["LlavaForConditionalGeneration"]
    path = Path(path)
    hf_config.save_pretrained(path)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path

