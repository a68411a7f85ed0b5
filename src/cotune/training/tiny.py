"""``cotune-tiny``: a small Qwen2-architecture model built locally, with no download.

A byte-level tokenizer (256 byte tokens plus the Qwen chat markers) and a 2-layer
Qwen2 decoder, initialised from a fixed seed and given a short deterministic
pre-training on generic generated text, so fine-tuning starts from a model that
already knows bytes, words and the chat format. The result is cached by a hash of
everything that defines it; building it takes seconds on two CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from cotune.common.home import cotune_home
from cotune.training.config import TINY_MODEL_ID
from cotune.training.synthetic import generic_text

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MODEL_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
PRETRAIN = {"seed": 0, "steps": 300, "batch": 16, "seq_len": 128, "lr": 3e-3, "texts": 4000}
RECIPE_VERSION = 4


def recipe_hash() -> str:
    """Hash of everything that defines the tiny model; names its cache directory."""
    recipe = {
        "version": RECIPE_VERSION,
        "special": SPECIAL_TOKENS,
        "template": CHAT_TEMPLATE,
        "shape": MODEL_SHAPE,
        "pretrain": PRETRAIN,
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The byte-level tokenizer: every byte is a token, plus the chat special tokens."""
    vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    vocab = {ch: i for i, ch in enumerate(sorted(vocab))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        eos_token=SPECIAL_TOKENS[0],
        pad_token=SPECIAL_TOKENS[0],
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: PreTrainedTokenizerBase) -> Qwen2ForCausalLM:
    """A freshly initialised tiny Qwen2 (seeded, so always the same weights)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_SHAPE,  # type: ignore[arg-type]
    )
    torch.manual_seed(PRETRAIN["seed"])
    return Qwen2ForCausalLM(config)


def _pretrain(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerBase) -> None:
    texts = generic_text(int(PRETRAIN["texts"]))
    stream: list[int] = []
    for item in texts:
        text = (
            item if isinstance(item, str) else tokenizer.apply_chat_template(item, tokenize=False)
        )
        stream.extend(tokenizer(str(text))["input_ids"])
        stream.append(int(tokenizer.eos_token_id))
    seq, batch = int(PRETRAIN["seq_len"]), int(PRETRAIN["batch"])
    blocks = torch.tensor(stream[: len(stream) // seq * seq]).view(-1, seq)
    generator = torch.Generator().manual_seed(int(PRETRAIN["seed"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(PRETRAIN["lr"]))
    model.train()
    for _ in range(int(PRETRAIN["steps"])):
        rows = torch.randint(0, blocks.shape[0], (batch,), generator=generator)
        inputs = blocks[rows]
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.train(False)


def tiny_model_dir(cache_dir: Path | None = None) -> Path:
    """The cached ``cotune-tiny`` directory, building it first when missing."""
    root = cache_dir or cotune_home() / "models"
    target = root / f"{TINY_MODEL_ID}-{recipe_hash()}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    staging.chmod(0o755)
    try:
        tokenizer = build_tokenizer()
        model = build_model(tokenizer)
        _pretrain(model, tokenizer)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "cotune-model.json").write_text(
            json.dumps({"id": TINY_MODEL_ID, "recipe": recipe_hash()}, indent=2) + "\n"
        )
        try:
            staging.rename(target)  # atomic: a concurrent builder's result wins
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
