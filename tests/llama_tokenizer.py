"""A tiny LLaMA-style tokenizer folder built offline, for tests that need Vicuna's tokenizer behaviour.

Like Vicuna's (LLaMA's sentencepiece BPE as transformers converts it): `<unk>` = 0, `<s>` = 1, `</s>` = 2, the
256 byte-fallback tokens `<0x00>`..`<0xFF>` = 3..258, then word pieces; metaspace pre-tokenization ("▁" for
spaces, one prepended at the start of the text, not after a special token: legacy=False), BOS added to every
encoded text, no EOS, no pad token. Characters outside the pieces fall back to bytes, as in LLaMA.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaTokenizer

from minillava.conversation import TEMPLATES

SPECIALS = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
CORPUS = [
    TEMPLATES["v0"].system,
    TEMPLATES["v1"].system,
    "Human: Assistant: USER: ASSISTANT: What is in the image? Describe the image concisely.",
    "The bus in the image is white and red. What feature can be seen on the back of the bus?",
    "Where is the cat positioned in the image? The cat is positioned on top of the back of the couch.",
    "Write a terse but informative summary of the picture. Render a clear and concise summary of the photo.",
    "A red circle and a blue square. How many objects are there? There are three objects.",
]


def tiny_llama_tokenizer(path: str | Path, texts: Iterable[str] = (), vocab_size: int = 512) -> Path:
    """Write a LLaMA-style tokenizer trained on `CORPUS` (+ `texts`) to the folder `path`; return `path`.

    `vocab_size` caps the pieces (a small corpus yields fewer); `<image>` is not in it: `load_tokenizer` adds it
    after the last id, as it does to Vicuna's 32000.
    """
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    bpe = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    # split at spaces while learning, so no piece spans two words (sentencepiece's split_by_whitespace)
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bpe.train_from_iterator([*CORPUS, *texts], trainer)
    model = json.loads(bpe.to_str())["model"]
    tok = LlamaTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]], add_bos_token=True,
                         add_eos_token=False, legacy=False, padding_side="right", model_max_length=2048)
    tok.save_pretrained(str(path))
    return Path(path)
