"""Training, evaluation and export of flexguard models (needs the ``train`` extra: torch)."""
