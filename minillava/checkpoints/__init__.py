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

Modules:
- `files`: checkpoint files and folders read safely (`CheckpointFiles`), and our own safetensors weights that carry
  the training stages (`load_weights`, `save_weights`).
- `keymaps`: the `Rule` tables of every format, `convert` (file -> our state dict, checked) and `export_state`.
- `hf_config`: transformers' Llama and CLIP vision configs to ours and back.
- `loaders`: HF Llama / Vicuna, open_clip and HF CLIP towers, original LLaVA and its stage-1 projector.
- `hf_llava`: transformers' Llava, both directions.
- `parts`: where training starts: each part from its file or a fresh init (`llava_config`, `initial_state`).

Everything public is importable from `minillava.checkpoints` itself.
"""

from .files import CheckpointFiles, load_weights, read_weights, save_state, save_weights
from .hf_config import llama_config_from_hf, llama_config_to_hf, vision_config_from_hf, vision_config_to_hf
from .hf_llava import export_hf_llava, load_hf_llava
from .keymaps import (
    Rule,
    clip_vision_rules,
    convert,
    export_state,
    hf_llava_rules,
    llama_rules,
    original_llava_rules,
    projector_rules,
)
from .loaders import (
    load_hf_clip_vision,
    load_hf_llama,
    load_llava,
    load_open_clip_vision,
    load_projector,
    open_clip_vision_config,
    resolve_open_clip_file,
    save_hf_llama,
    save_llava,
)
from .parts import initial_state, llava_config

# the loaders, savers, key maps and config translation; helpers stay in their modules
__all__ = [
    "CheckpointFiles",
    "Rule",
    "clip_vision_rules",
    "convert",
    "export_hf_llava",
    "export_state",
    "hf_llava_rules",
    "llama_config_from_hf",
    "llama_config_to_hf",
    "llama_rules",
    "load_hf_clip_vision",
    "load_hf_llama",
    "load_hf_llava",
    "load_llava",
    "load_open_clip_vision",
    "load_projector",
    "load_weights",
    "open_clip_vision_config",
    "original_llava_rules",
    "projector_rules",
    "read_weights",
    "resolve_open_clip_file",
    "save_hf_llama",
    "save_llava",
    "save_state",
    "initial_state",
    "llava_config",
    "save_weights",
    "vision_config_from_hf",
    "vision_config_to_hf",
]
