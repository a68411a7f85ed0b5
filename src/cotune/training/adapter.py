"""Saving an adapter: the PEFT layout plus ``cotune.json``, written all-or-nothing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from peft import PeftModel

from cotune.common.atomic import fsync_directory
from cotune.training.base_model import BaseModel
from cotune.training.config import LoraHyperparams
from cotune.training.evaluate import EvalResult
from cotune.training.manifest import MANIFEST_FORMAT, MANIFEST_NAME, DatasetRecord

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", MANIFEST_NAME)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine the adapter's bytes."""
    return {
        name: version(name) for name in ("cotune", "peft", "safetensors", "torch", "transformers")
    }


def build_manifest(
    base: BaseModel,
    hp: LoraHyperparams,
    datasets: Sequence[DatasetRecord],
    *,
    steps: int,
    tokens: int,
    eval_base: EvalResult | None = None,
    eval_adapter: EvalResult | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``cotune.json`` content (no timestamps, so equal runs give equal bytes)."""
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "base_model": {"id": base.model_id, "sha256": base.sha256},
        "hyperparameters": hp.to_dict(),
        "datasets": [d.to_dict() for d in datasets],
        "training": {"steps": steps, "tokens": tokens},
        "eval": {
            "base": eval_base.to_dict() if eval_base else None,
            "adapter": eval_adapter.to_dict() if eval_adapter else None,
        },
        "libraries": library_versions(),
    }
    if extra:
        manifest.update(extra)
    return manifest


def save_adapter(
    model: PeftModel, out_dir: Path, manifest: Mapping[str, Any], *, overwrite: bool = False
) -> Path:
    """Write the PEFT files and ``cotune.json`` to ``out_dir``, appearing only when complete.

    ``adapter_config.json`` names the base model by its id (``base_model.id`` in the
    manifest), not by a local path, so equal runs on different machines match.
    """
    out_dir = out_dir.resolve()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; choose another directory or overwrite it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        base_id = manifest.get("base_model", {}).get("id")
        if base_id:
            for config in model.peft_config.values():
                config.base_model_name_or_path = base_id
        with warnings.catch_warnings():
            # peft looks for the base config at that id to see if the vocabulary changed;
            # the adapter never touches embeddings, so its "could not find" is noise
            warnings.filterwarnings("ignore", message="Could not find a config file")
            model.save_pretrained(str(staging))
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (staging / MANIFEST_NAME).write_text(text)
        for file in staging.iterdir():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())
        staging.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
        fsync_directory(out_dir.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def read_manifest(adapter_dir: Path) -> dict[str, Any]:
    """The ``cotune.json`` of an adapter directory."""
    path = adapter_dir / MANIFEST_NAME
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{adapter_dir}: not a cotune adapter (no {MANIFEST_NAME})"
        ) from exc
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")
    return manifest
