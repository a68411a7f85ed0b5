"""Helpers shared by every layer: nothing here knows about chains, storage or training."""
