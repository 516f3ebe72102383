"""Where training starts (`minillava.checkpoints.parts`, `LlavaModule`): each part from a real checkpoint in its
release format, shapes taken from the files, weights equal to the file's; and what stage 1 and 2 save reads back."""

from __future__ import annotations

import pytest
import real_checkpoints
import torch
import transformers

from minillava import load_llava
from minillava.checkpoints import initial_state, llava_config, load_hf_llava
from minillava.training import LlavaModule

TINY = {"llm.vocab_size": 64, "image_token_id": 64, "vision.image_size": 32}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    llama = real_checkpoints.hf_llama_folder(root / "llama")
    clip = real_checkpoints.hf_clip_folder(root / "clip")
    _, open_clip_folder = real_checkpoints.tiny_open_clip(root / "open_clip")
    return llama, clip, open_clip_folder


def module(stage=2, **kw) -> LlavaModule:
    m = LlavaModule(stage=stage, overrides={**TINY, **kw.pop("overrides", {})}, **kw)
    m.configure_model()
    return m


@pytest.mark.parametrize("as_file", [False, True])
def test_the_llm_from_an_hf_llama_folder_or_its_weight_file(folders, as_file):
    llama, _, _ = folders
    m = module(llm_weights=str(llama / "model.safetensors" if as_file else llama))
    assert (m.cfg.llm.d_model, m.cfg.llm.n_layers, m.cfg.llm.ffn_dim) == (64, 2, 96)  # the folder's, not the preset's
    hf = transformers.LlamaForCausalLM.from_pretrained(llama)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(m.model.llm(ids), hf(ids).logits, atol=1e-4, rtol=0)
    assert all(p.dtype == torch.float32 for p in m.model.parameters())  # fp32 masters, whatever the file holds


def test_the_tower_from_an_hf_clip_folder_or_an_open_clip_file(folders):
    _, clip, open_clip_folder = folders
    from_hf = module(vision_weights=str(clip))
    assert (from_hf.cfg.vision.width, from_hf.cfg.vision.layers, from_hf.cfg.vision.quick_gelu) == (32, 3, True)
    hf = transformers.CLIPVisionModel.from_pretrained(clip)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=x, output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(from_hf.model.vision(x), expected, atol=1e-4, rtol=0)
    from_open_clip = module(vision_weights=str(open_clip_folder / "open_clip_model.safetensors"),
                            vision_name=real_checkpoints.TINY_VIT_NAME)
    assert from_open_clip.cfg.vision.width == 32 and from_open_clip.cfg.vision.quick_gelu
    with pytest.raises(ValueError, match="vision_name"):
        LlavaModule(vision_name=real_checkpoints.TINY_VIT_NAME)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="llm_weights .*nowhere"):
        LlavaModule(llm_weights=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        LlavaModule(llm_weights=str(tmp_path / "empty"))


def test_fresh_parts_follow_the_global_seed_and_files_fill_the_rest(folders):
    llama, clip, _ = folders
    cfg = llava_config("toy", TINY, clip, None, llama)
    torch.manual_seed(3)
    a = initial_state(cfg, clip, None, llama)
    torch.manual_seed(3)
    b = initial_state(cfg, clip, None, llama)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    hf = transformers.LlamaForCausalLM.from_pretrained(llama).state_dict()
    assert torch.equal(a["llm.layers.1.mlp.up_proj.weight"], hf["model.layers.1.mlp.up_proj.weight"])


def test_stage1_saves_the_original_projector_file_and_stage2_reads_it(tmp_path, folders):
    llama, clip, _ = folders
    torch.manual_seed(0)
    s1 = module(1, llm_weights=str(llama), vision_weights=str(clip), save_to=str(tmp_path / "mm_projector.bin"))
    s1.save(s1.hparams.save_to)
    on_disk = torch.load(tmp_path / "mm_projector.bin", weights_only=True)
    assert set(on_disk) == {"model.mm_projector.weight", "model.mm_projector.bias"}  # the original's keys
    s2 = module(2, llm_weights=str(llama), vision_weights=str(clip),
                projector_weights=str(tmp_path / "mm_projector.bin"))
    torch.testing.assert_close(s2.model.projector.weight, s1.model.projector.weight)


@pytest.mark.parametrize("projector", ["linear", "mlp2x_gelu"])
def test_stage2_saves_an_original_llava_folder_that_loads_and_exports(tmp_path, folders, projector):
    from minillava import export_hf_llava

    llama, clip, _ = folders
    torch.manual_seed(0)
    m = module(2, llm_weights=str(llama), vision_weights=str(clip), overrides={"projector": projector})
    m.save(tmp_path / "llava")
    loaded = load_llava(tmp_path / "llava")  # the tower comes from the folder's vision_tower/
    ids = torch.randint(0, 64, (1, 16 + 5))
    ids[0, 1:17] = 64
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, x)["logits"], m.model.eval()(ids, x)["logits"])
    if projector == "mlp2x_gelu":  # transformers' Llava has a two-layer projector only
        export_hf_llava(loaded, tmp_path / "hf")
        back = load_hf_llava(tmp_path / "hf")
        with torch.no_grad():
            # the export pads the vocabulary up to the placeholder id with zero rows (export_hf_llava)
            torch.testing.assert_close(back(ids, x)["logits"][..., :64], m.model(ids, x)["logits"])


def test_activation_checkpointing_changes_no_loss_or_gradient(tokenizer):
    from test_training import batch_for

    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        m = module(2, overrides={"llm.vocab_size": 1024, "image_token_id": 4},
                   activation_checkpointing=checkpointing)
        batch = batch_for(tokenizer, m)
        loss = m.model(**batch, return_logits=False)["loss"]
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in m.model.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = grads
    torch.testing.assert_close(l0, l1)
    assert g0.keys() == g1.keys() and g0
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], msg=name)
