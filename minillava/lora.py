"""LoRA on a LLaVA's language model, through `peft` (the optional extra `pip install "minillava[lora]"`).

What the official code does (haotian-liu/LLaVA, `llava/train/train.py` with `--lora_enable True`):
- `find_all_linear_names`: every `nn.Linear` of the model except those under the projector (`mm_projector`), the
  vision tower and `lm_head`, by leaf name: for a LLaMA that is q/k/v/o_proj and gate/up/down_proj of every block;
- `LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.05, bias="none")` on those;
- every other LLM weight frozen, the projector trained *fully* ("in case it is frozen by LoRA",
  `initialize_vision_modules`) at its own learning rate `mm_projector_lr`;
- the adapters and the other trained weights (`non_lora_trainables.bin`: the projector) saved on their own, and
  merged into the base weights afterwards (`scripts/merge_lora_weights.py`).

Here: `add_lora` wraps the LLM's linear layers in place (peft's `inject_adapter_in_model`: each becomes a
`lora.Linear` holding the frozen `base_layer` and `lora_A`/`lora_B`), `save_adapters` / `load_adapters` write and
read a folder of the adapters and the projector, and `merge_lora` folds B A (alpha / r) into each base weight and
puts plain `nn.Linear` layers back, so the merged model has exactly `Llava(cfg)`'s keys and saves, exports and
generates like any other.

A 4-bit base (QLoRA, `quantize_llm`) needs a CUDA GPU and bitsandbytes; it is refused with a message elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoints.files import PathLike, load_safetensors, read_json, save_state, writing
from .model import Llava, LlavaConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # lora_A / lora_B, our key names
NON_LORA_WEIGHTS = "non_lora_trainables.safetensors"  # the projector, trained fully (the official file's name)
ADAPTER_NAME = "default"


def require_peft():
    """peft, or an ImportError saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ImportError('LoRA needs peft: pip install "minillava[lora]" (or pip install peft)') from None
    return peft


@dataclass
class LoraSettings:
    """The official defaults are r 64, alpha 16; the task fine-tuning script runs r 128, alpha 256."""

    r: int = 128
    alpha: float = 256
    dropout: float = 0.05
    targets: list[str] = field(default_factory=list)  # empty: every linear layer of the LLM but lm_head

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"lora_r must be an integer >= 1 (the adapters' rank), got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ValueError(f"lora_alpha must be a number > 0, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def scale(self) -> float:
        return self.alpha / self.r


def llm_linear_names(model: Llava) -> list[str]:
    """`find_all_linear_names` restricted to what it keeps: the leaf names of the LLM's linear layers, lm_head out
    (the projector and the tower are outside `model.llm`, so they are never targets)."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.llm.named_modules() if isinstance(module, nn.Linear)}
    names.discard("lm_head")
    return sorted(names)


def add_lora(model: Llava, settings: LoraSettings) -> Llava:
    """Wrap the LLM's linear layers (all but lm_head, or `settings.targets`) with LoRA adapters, in place.

    Afterwards only the adapters and the projector train: the tower and every base weight of the LLM are frozen.
    Works on a meta-device model too (the adapters are then on the meta device, to be filled later).
    """
    peft = require_peft()
    known = llm_linear_names(model)
    targets = list(settings.targets) or known
    unknown = sorted(set(targets) - set(known))
    if unknown:
        raise ValueError(f"lora targets {unknown} are not linear layers of the LLM; it has {known}")
    if any(isinstance(m, peft.tuners.lora.LoraLayer) for m in model.modules()):
        raise ValueError("the model already has LoRA adapters")
    config = peft.LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                             target_modules=targets, bias="none")
    peft.inject_adapter_in_model(config, model.llm, adapter_name=ADAPTER_NAME)
    for _, layer in lora_layers(model.llm):  # new modules start in training mode: follow the LLM's (dropout)
        layer.train(model.llm.training)
    model.requires_grad_(False)
    for name, param in model.llm.named_parameters():
        param.requires_grad_("lora_" in name)
    model.projector.requires_grad_(True)  # trained fully, as the official code does
    return model


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def has_lora(model: nn.Module) -> bool:
    try:
        return bool(lora_layers(model))
    except ImportError:
        return False


def adapter_keys(model: Llava) -> list[str]:
    """The state-dict keys of the adapters (lora_A / lora_B)."""
    return [k for k in model.state_dict() if ".lora_" in k]


def projector_keys(model: Llava) -> list[str]:
    return [k for k in model.state_dict() if k.startswith("projector.")]


def merge_lora(model: Llava) -> Llava:
    """Fold every adapter into its base weight (W + (alpha / r) B A) and put the plain nn.Linear back, in place:
    the result has `Llava(cfg)`'s keys and computes what the adapted model computed (up to float rounding)."""
    require_peft()
    layers = lora_layers(model)
    if not layers:
        raise ValueError("merge_lora: the model has no LoRA adapters")
    for name, layer in layers:
        layer.merge(safe_merge=True)  # safe: refuses to write NaN / inf into the base weight
        base = layer.get_base_layer()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, base)
    model.requires_grad_(False)
    return model


def lora_param_count(cfg: LlavaConfig, settings: LoraSettings | None = None, r: int | None = None) -> int:
    """Parameters of the adapters: r (in + out) per adapted linear layer (computed on the meta device)."""
    rank = settings.r if settings is not None else r
    if rank is None:
        raise ValueError("lora_param_count needs settings or r")
    with torch.device("meta"):
        model = Llava(cfg)
    targets = set(settings.targets) if settings is not None and settings.targets else set(llm_linear_names(model))
    return sum(rank * (m.in_features + m.out_features) for name, m in model.llm.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets)


# ---------------------------------------------------------------------------------------------------------------
# the adapters on disk


def save_adapters(folder: PathLike, state: dict[str, torch.Tensor], settings: LoraSettings, base: str | None,
                  extra: dict | None = None) -> Path:
    """Write the adapters (`adapter_model.safetensors`), the projector (`non_lora_trainables.safetensors`) and
    `adapter_config.json` (rank, alpha, dropout, targets, the base checkpoint) into `folder`.

    `state` holds at least the adapter keys and the projector keys (our names: `llm.layers.0.self_attn.q_proj.
    lora_A.default.weight`, `projector.0.weight`); other keys are ignored.
    """
    folder = Path(folder)
    adapters = {k: v for k, v in state.items() if ".lora_" in k}
    projector = {k: v for k, v in state.items() if k.startswith("projector.")}
    if not adapters:
        raise ValueError(f"save_adapters {folder}: the state holds no LoRA adapters")
    targets = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in adapters})
    with writing(folder / ADAPTER_CONFIG):
        folder.mkdir(parents=True, exist_ok=True)
        save_state(adapters, folder / ADAPTER_WEIGHTS)
        save_state(projector, folder / NON_LORA_WEIGHTS)
        config = {"peft_type": "LORA", "format": "minillava", **asdict(settings), "targets": targets,
                  "base_model": base, **(extra or {})}
        (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
    return folder


def read_adapter_config(folder: PathLike) -> tuple[LoraSettings, dict]:
    """The settings and the whole `adapter_config.json` of an adapter folder; errors name the file."""
    path = Path(folder) / ADAPTER_CONFIG
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"adapter folder {folder} does not exist")
    config = read_json(path)
    if config.get("peft_type") != "LORA" or config.get("format") != "minillava":
        raise ValueError(f"{path}: not a minillava LoRA adapter folder (peft_type LORA, format minillava)")
    try:
        settings = LoraSettings(r=config["r"], alpha=config["alpha"], dropout=config["dropout"],
                                targets=list(config["targets"]))
    except KeyError as exc:
        raise ValueError(f"{path}: missing field {exc}") from None
    return settings, config


def load_adapters(model: Llava, folder: PathLike) -> Llava:
    """Add the adapters of `folder` to a plain `model` (the base) and fill them and the projector from it, every
    key and shape checked."""
    folder = Path(folder)
    settings, _ = read_adapter_config(folder)
    add_lora(model, settings)
    own = model.state_dict()
    state = {}
    for name, wanted in ((ADAPTER_WEIGHTS, adapter_keys(model)), (NON_LORA_WEIGHTS, projector_keys(model))):
        part = load_safetensors(folder / name)
        missing, unexpected = sorted(set(wanted) - set(part)), sorted(set(part) - set(wanted))
        if missing or unexpected:
            raise ValueError(f"{folder / name}: does not fit this base model: missing keys {missing[:3]}, "
                             f"unexpected keys {unexpected[:3]}")
        for key, tensor in part.items():
            if tensor.shape != own[key].shape:
                raise ValueError(f"{folder / name}: {key} has shape {tuple(tensor.shape)}, the base model's "
                                 f"adapter expects {tuple(own[key].shape)}")
        state |= part
    model.load_state_dict(state, strict=False)
    return model


# ---------------------------------------------------------------------------------------------------------------
# QLoRA: a 4-bit base


def check_qlora(quantize: str | None) -> None:
    """QLoRA runs on a CUDA GPU with bitsandbytes only; anything else is refused before any weight is read."""
    if quantize is None:
        return
    if quantize != "4bit":
        raise ValueError(f"quantize must be null (LoRA on a 16/32-bit base) or '4bit' (QLoRA), got {quantize!r}")
    if not torch.cuda.is_available():
        raise RuntimeError("quantize='4bit' (QLoRA) needs a CUDA GPU: bitsandbytes' 4-bit layers run on CUDA only. "
                           "On this machine use LoRA without quantize (set quantize: null), or full fine-tuning")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError("quantize='4bit' (QLoRA) needs bitsandbytes: pip install bitsandbytes") from None


def quantize_llm(model: Llava, targets: list[str], compute_dtype: torch.dtype = torch.bfloat16) -> Llava:
    """Replace the LLM's target linear layers by bitsandbytes 4-bit NF4 layers (double quantisation, the official
    `--bits 4` defaults), quantised when moved to the GPU. The weights must be loaded already."""
    import bitsandbytes as bnb

    for name, module in list(model.llm.named_modules()):
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                  compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=True,
                                  device="meta")
            q.weight = bnb.nn.Params4bit(module.weight.data.to(compute_dtype).cpu(), requires_grad=False,
                                         quant_type="nf4", compress_statistics=True)
            parent, _, child = name.rpartition(".")
            setattr(model.llm.get_submodule(parent) if parent else model.llm, child, q)
    return model


def qlora_bytes_per_param() -> float:
    """NF4 with double quantisation: 4 bits + ~0.127 bits of constants per parameter (the QLoRA paper)."""
    return (4 + 0.127) / 8


__all__ = ["LoraSettings", "add_lora", "merge_lora", "save_adapters", "load_adapters", "read_adapter_config",
           "llm_linear_names", "lora_param_count", "check_qlora", "quantize_llm", "require_peft"]
