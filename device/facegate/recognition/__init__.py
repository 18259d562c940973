"""Turning per-frame matches into per-visit decisions: tracking, multi-frame fusion, cooldown."""
