"""minillava: an educational, scalable reference implementation of LLaVA (Visual Instruction Tuning)."""

from .llama import Llama, LlamaConfig
from .model import Llava, LlavaConfig, llava_preset
from .vision import VisionConfig, VisionTower

__all__ = ["Llama", "LlamaConfig", "Llava", "LlavaConfig", "VisionConfig", "VisionTower", "llava_preset"]
__version__ = "0.1.0"
