"""Algorithm 3's freezing policy, learning, and Algorithm 4's stopping rule."""

from __future__ import annotations

import pytest
import torch

from minillava.conversation import TEMPLATES, pad_batch, tokenize_text, tokenize_turns
from minillava.evaluate import chance_accuracy, normalise
from minillava.generate import SamplingConfig, generate, sample_next
from minillava.training import LlavaModule, apply_stage, cosine_with_warmup

TURNS = [("human", "<image>\nWhat colour is the circle?"), ("gpt", "red")]


def batch_for(tokenizer, module, n=4):
    ex = tokenize_turns(TURNS, tokenizer, TEMPLATES["v0"], module.cfg.num_image_tokens)
    batch = pad_batch([ex] * n, tokenizer.pad_token_id)
    batch["pixel_values"] = torch.randn(n, 3, 32, 32)
    return batch


def small_module(stage, **kw):
    torch.manual_seed(0)
    module = LlavaModule(stage=stage, overrides={"llm.n_layers": 2}, **kw)
    module.configure_model()  # outside a Trainer, as `module.model` would on first use
    return module


@pytest.mark.parametrize("stage,trains", [(1, {"projector"}), (2, {"projector", "llm"})])
def test_each_stage_updates_exactly_the_intended_parameters(tokenizer, stage, trains):
    module = small_module(stage, lr=1e-2)
    module.train()
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    module.model(**batch_for(tokenizer, module))["loss"].backward()
    opt.step()
    after = module.model.state_dict()
    for part in ("vision", "projector", "llm"):
        keys = [k for k in before if k.startswith(part + ".")]
        changed = [k for k in keys if not torch.equal(before[k], after[k])]
        if part in trains:  # every parameter of a trained part moves (rotary tables are buffers, not parameters)
            params = {f"{part}.{n}" for n, _ in getattr(module.model, part).named_parameters()}
            assert set(changed) == params, f"stage {stage}: {sorted(params - set(changed))[:3]} did not change"
        else:
            assert not changed, f"stage {stage}: frozen {part} changed: {changed[:3]}"
    assert not module.model.vision.training  # the frozen tower stays in eval mode


def test_stage_must_be_1_or_2():
    with pytest.raises(ValueError, match="stage must be 1"):
        apply_stage(small_module(1).model, 3)


def test_cosine_schedule_warms_up_then_decays():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, total_steps=100, warmup_ratio=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.01


def overfit(tokenizer, steps=60):
    module = small_module(2)
    batch = batch_for(tokenizer, module)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = module.model(**batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return module, batch, losses


def test_short_run_lowers_the_loss_and_generation_stops_at_the_separator(tokenizer):
    module, batch, losses = overfit(tokenizer)
    assert losses[-1] < 0.2 * losses[0]
    model = module.model.eval()
    text, _ = TEMPLATES["v0"].render(TURNS[:1], generation_prompt=True)
    ex = tokenize_text(text, [], tokenizer, model.cfg.num_image_tokens)
    prompt = pad_batch([ex, ex], tokenizer.pad_token_id, side="left")
    out = generate(model, prompt["input_ids"], prompt["attention_mask"], tokenizer, "###",
                   batch["pixel_values"][:2], SamplingConfig(max_new_tokens=20))
    assert out == ["red", "red"]  # stopped at "###", marker removed, nothing after it


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, SamplingConfig(temperature=1.0, top_p=0.8), gen)) for _ in range(200)}
    assert draws == {0, 1}
    assert int(sample_next(logits, SamplingConfig())) == 0  # temperature 0 is greedy


def test_exact_match_normalisation_and_chance():
    assert normalise(" Red circle. ") == "red circle"
    items = [{"kind": "count", "answer": a} for a in ["2", "2", "3"]] + [{"kind": "yesno", "answer": "no"}]
    chance = chance_accuracy(items)
    assert chance["count"] == pytest.approx(2 / 3) and chance["yesno"] == 1.0 and chance["overall"] == 0.75


def test_image_cache_decodes_each_image_once_and_names_a_missing_one(toy_data, tmp_path):
    from minillava.data.dataset import ImageCache, clip_transform, load_image

    folder, transform = toy_data["images"], clip_transform(32)
    name = sorted(p.name for p in folder.iterdir())[0]
    cache = ImageCache(folder, transform, enabled=True)
    first = cache.get(name, "rec-1")
    assert cache.get(name, "rec-1") is first  # kept, not re-read
    assert torch.equal(first, load_image(folder, name, "rec-1", transform))
    off = ImageCache(folder, transform, enabled=False)
    assert off.get(name, "rec-1") is not off.get(name, "rec-1") and not off.images
    with pytest.raises(FileNotFoundError, match="record rec-9: cannot read image .*nope.png"):
        cache.get("nope.png", "rec-9")
