"""transformers' Llava (`LlavaForConditionalGeneration`), both directions: a saved folder or the model object ->
our Llava (`load_hf_llava`), and our Llava -> a folder in the key names of the published llava-hf checkpoints
(`export_hf_llava`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..model import Llava, LlavaConfig
from .files import CheckpointFiles, PathLike, read_json, writing
from .hf_config import llama_config_from_hf, llama_config_to_hf, vision_config_from_hf, vision_config_to_hf
from .keymaps import assign, convert, expected_shapes, export_state, hf_llava_key, hf_llava_rules, rename_prefix


def hf_llava_config(config: dict, where: str) -> LlavaConfig:
    """Our LlavaConfig from a transformers Llava config.json's contents (no weight is read); `where` names the
    source in errors."""
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
    token = config.get("image_token_id", config.get("image_token_index"))
    if token is None:
        raise ValueError(f"{where}: no image_token_id (or image_token_index)")
    return LlavaConfig(vision=vcfg, llm=llm, projector="mlp2x_gelu", image_token_id=token)


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
    cfg = hf_llava_config(config, where)
    with torch.device("meta"):
        model = Llava(cfg)
    state = convert(hf_llava_rules(cfg), source, expected_shapes(model), where, dtype=dtype)
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
    with writing(path / "model.safetensors"):
        path.mkdir(parents=True, exist_ok=True)
        hf_config.save_pretrained(path)
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path
