"""minillava: an educational, scalable reference implementation of LLaVA (Visual Instruction Tuning)."""

from importlib import import_module

# Model classes load on first use, so commands that need no torch (`minillava gen-data`) start in a blink.
_EXPORTS = {
    "Llama": ".llama",
    "LlamaConfig": ".llama",
    "Llava": ".model",
    "LlavaConfig": ".model",
    "llava_preset": ".model",
    "VisionConfig": ".vision",
    "VisionTower": ".vision",
    "export_hf_llava": ".checkpoints.hf_llava",
    "load_hf_llama": ".checkpoints.loaders",
    "load_hf_llava": ".checkpoints.hf_llava",
    "load_llava": ".checkpoints.loaders",
    "load_open_clip_vision": ".checkpoints.loaders",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'minillava' has no attribute {name!r}")
