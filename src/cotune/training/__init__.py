"""The training layer: JSONL data, the tiny model, LoRA training, evaluation, the gate.

Knows nothing about chains or storage.
"""
