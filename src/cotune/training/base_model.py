"""Loading a base model: ``cotune-tiny`` or any Hugging Face model directory."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from cotune.training.config import TINY_MODEL_ID
from cotune.training.tiny import tiny_model_dir

WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class BaseModel:
    """A loaded base model, its tokenizer, and what identifies it."""

    model_id: str
    path: Path
    sha256: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device

    @property
    def pad_id(self) -> int:
        """Padding token id (eos when the tokenizer has no pad token)."""
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        return int(pad or 0)


def weights_sha256(path: Path) -> str:
    """SHA-256 over the weight files of a model directory, in name order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{path}: no model weights (*.safetensors or *.bin)")
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def pick_device() -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 when present, otherwise CPU with float32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def resolve_base(base: str, cache_dir: Path | None = None) -> tuple[str, Path]:
    """(model id, directory) for ``cotune-tiny`` or a model directory path."""
    if base == TINY_MODEL_ID:
        return TINY_MODEL_ID, tiny_model_dir(cache_dir)
    path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{base}: not a Hugging Face model directory (no config.json); "
            f"use a local directory or {TINY_MODEL_ID!r} (no downloads at run time)"
        )
    return path.name, path


def load_base(base: str = TINY_MODEL_ID, cache_dir: Path | None = None) -> BaseModel:
    """Load a base model and its tokenizer onto the best device (no network access)."""
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model_id, path = resolve_base(base, cache_dir)
    device, dtype = pick_device()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.chat_template is None:
        raise ValueError(f"{path}: the tokenizer has no chat template")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.to(device)  # type: ignore[arg-type]
    model.train(False)
    return BaseModel(model_id, path, weights_sha256(path), model, tokenizer, device)
