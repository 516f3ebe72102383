"""minillava: an educational, scalable reference implementation of LLaVA (Visual Instruction Tuning)."""

from .checkpoints import export_hf_llava, load_hf_llama, load_hf_llava, load_llava, load_open_clip_vision
from .llama import Llama, LlamaConfig
from .model import Llava, LlavaConfig, llava_preset
from .vision import VisionConfig, VisionTower

__all__ = [
    "Llama", "LlamaConfig", "Llava", "LlavaConfig", "VisionConfig", "VisionTower", "export_hf_llava", "llava_preset",
    "load_hf_llama", "load_hf_llava", "load_llava", "load_open_clip_vision",
]
__version__ = "0.1.0"
