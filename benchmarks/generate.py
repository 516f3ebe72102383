"""Generation speed: our decoding (Algorithm 4) against transformers' `LlavaForConditionalGeneration.generate`.

Same weights: a Llava with the toy vision tower and a LLaMA of `--layers` x `--width` is exported with
`export_hf_llava`, and both transformers and we load that folder (`load_hf_llava`). Same prompts: toy-world
conversations rendered with the v0 template up to the assistant's turn, about 100 tokens each with the image's 16
placeholders, left-padded in a batch. Greedy decoding of `--new-tokens` tokens with EOS and the stop string off in
every engine (a randomly initialised model would stop at random places), so every row makes exactly that many.

Engines, timed in turn in one process (so they share the machine's load), each call the whole `generate` (vision
tower, prefill, decoding), median over `--repeats`:
- transformers: `LlavaForConditionalGeneration.generate(do_sample=False)`;
- reference: minillava/generate.py, the readable loop;
- fast: minillava/fast_generate.py, eager;
- fast+compile (`--compile`): the same with its one-token step compiled by torch.compile (the compilation, tens of
  seconds, happens in the warm-up and is not timed).

Checked before timing: every engine gives transformers' tokens, row by row (printed as "identical tokens").
Tokens per second = batch x new tokens / seconds; CPU seconds are the steadier measure on a busy machine (they
leave out the time other processes held the core).

    python benchmarks/generate.py                          # 6 x 384 LLM, batch 1 and 8, 128 new tokens
    python benchmarks/generate.py --layers 6 --width 256   # another size
    python benchmarks/generate.py --compile --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import transformers

from minillava import Llava, export_hf_llava, load_hf_llava
from minillava.conversation import TEMPLATES, pad_batch, tokenize_text
from minillava.data.dataset import clip_transform, load_image, record_turns
from minillava.data.toy_data import ToyDataConfig, generate_toy_data
from minillava.fast_generate import FastGenerator
from minillava.generate import SamplingConfig, generate
from minillava.llama import LlamaConfig
from minillava.model import llava_preset, override
from minillava.tokenizer import load_tokenizer, train_bpe_tokenizer


def toy_prompts(folder: Path, n: int, target: int = 100):
    """`n` prompts of about `target` tokens (image included): toy conversations up to an assistant turn, and their
    images; with the BPE tokenizer of the toy world (built here in seconds)."""
    files = generate_toy_data(folder, ToyDataConfig(n_train=200, n_eval=8, n_lm=200))
    records = json.loads(files["stage2"].read_text())
    template = TEMPLATES["v0"]
    texts = [template.render(record_turns(r))[0] for key in ("lm", "stage1", "stage2")
             for r in json.loads(files[key].read_text())]
    train_bpe_tokenizer(texts, vocab_size=1023).save_pretrained(folder / "tokenizer")
    tok = load_tokenizer(folder / "tokenizer")
    found = []
    for rec in records:  # the longest prefix of whole turns ending with a human turn, kept if near the target
        turns = record_turns(rec)
        for end in range(len(turns) - 1, 0, -2):
            text, _ = template.render(turns[:end], generation_prompt=True)
            ex = tokenize_text(text, [], tok, 16)
            if len(ex.input_ids) <= target * 1.15:
                if len(ex.input_ids) >= target * 0.85:
                    found.append((ex, rec))
                break
        if len(found) == n:
            break
    transform = clip_transform(32)
    pixels = torch.stack([load_image(folder / "images", rec["image"], rec["id"], transform) for _, rec in found])
    return [ex for ex, _ in found], pixels, tok


def seconds(call) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384, help="LLM width (heads of 64)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every engine (1: steadier)")
    parser.add_argument("--compile", action="store_true", help="also time the fast path with torch.compile")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        examples, pixels, tok = toy_prompts(tmp / "data", max(args.batches))
        cfg = override(llava_preset("toy"), {"projector": "mlp2x_gelu",
                                             "image_token_id": tok.convert_tokens_to_ids("<image>")})
        cfg.llm = LlamaConfig(vocab_size=len(tok), d_model=args.width, n_layers=args.layers,
                              n_heads=args.width // 64, ffn_dim=round(args.width * 344 / 128 / 8) * 8, max_seq_len=512)
        torch.manual_seed(0)
        export_hf_llava(Llava(cfg), tmp / "hf")
        theirs = transformers.LlavaForConditionalGeneration.from_pretrained(tmp / "hf").eval()
        ours = load_hf_llava(tmp / "hf")
    theirs.generation_config.eos_token_id = None  # EOS off: every row makes --new-tokens tokens
    n_llm = ours.llm.num_params()
    print(f"model: toy CLIP tower (32 px, 16 visual tokens) + LLaMA {args.layers} layers x {args.width} wide, "
          f"ffn {cfg.llm.ffn_dim}, vocabulary {len(tok)}: {n_llm / 1e6:.1f} M LLM parameters "
          f"({4 * n_llm / 2**20:.0f} MiB in fp32); greedy, {args.new_tokens} new tokens; {torch.get_num_threads()} "
          f"thread(s), torch {torch.__version__}, transformers {transformers.__version__}")
    print("measured in one run: the engines alternate in the same process, so they share the machine's load; "
          "ratios are of this run only")
    no_stop = SimpleNamespace(eos_token_id=None, decode=tok.decode)  # EOS off for our engines too
    sampling = SamplingConfig(max_new_tokens=args.new_tokens)
    fast = FastGenerator(ours)
    compiled = FastGenerator(ours, compile=True) if args.compile else None
    results = {}
    for b in args.batches:
        batch = pad_batch(examples[:b], tok.pad_token_id, side="left")
        ids, mask, pix = batch["input_ids"], batch["attention_mask"], pixels[:b]
        t = ids.shape[1]

        def hf_call():
            with torch.no_grad():
                out = theirs.generate(input_ids=ids, attention_mask=mask, pixel_values=pix, do_sample=False,
                                      max_new_tokens=args.new_tokens, pad_token_id=tok.pad_token_id)
            return out[:, t:].tolist()

        engines = {"transformers": hf_call,
                   "reference": lambda: generate(ours, ids, mask, no_stop, "", pix, sampling),
                   "fast": lambda: fast.generate_ids(ids, mask, no_stop, "", pix, sampling)}
        if compiled is not None:
            engines["fast+compile"] = lambda: compiled.generate_ids(ids, mask, no_stop, "", pix, sampling)
        # the reference returns text; its tokens are the fast path's if the texts agree and the fast path's tokens
        # are transformers'
        expected = hf_call()
        same = {"fast": fast.generate_ids(ids, mask, no_stop, "", pix, sampling) == expected}
        texts = [no_stop.decode(row).strip() for row in expected]
        same["reference"] = engines["reference"]() == texts
        if compiled is not None:
            same["fast+compile"] = engines["fast+compile"]() == expected  # compiles here, untimed
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in engines}
        for _ in range(args.repeats):
            for name, call in engines.items():
                wall, cpu, _ = seconds(call)
                times[name].append((wall, cpu))
        made = b * args.new_tokens
        row = {"prompt_tokens": t, "real_prompt_tokens": int(mask.sum()) // b, "identical_tokens": same}
        print(f"\nbatch {b}: prompts of {t} positions ({int(mask.sum())} real tokens), {made} new tokens per call; "
              f"identical tokens to transformers: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items()))
        for name, ts in times.items():
            wall = statistics.median(x[0] for x in ts)
            cpu = statistics.median(x[1] for x in ts)
            row[name] = {"tokens_per_s_wall": made / wall, "tokens_per_s_cpu": made / cpu}
            ratio = "" if name == "transformers" else (
                f"   x{row[name]['tokens_per_s_wall'] / row['transformers']['tokens_per_s_wall']:.2f} wall, "
                f"x{row[name]['tokens_per_s_cpu'] / row['transformers']['tokens_per_s_cpu']:.2f} CPU")
            print(f"  {name:>13}: {made / wall:7.1f} tokens/s wall, {made / cpu:7.1f} tokens/s CPU{ratio}")
        results[f"batch{b}"] = row
    summary = {"layers": args.layers, "width": args.width, "llm_params": n_llm, "new_tokens": args.new_tokens,
               "threads": torch.get_num_threads(), "repeats": args.repeats, **results}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
