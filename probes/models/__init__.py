"""Checkpoints: loading (``loading``), TransformerLens-style weight views with architecture
differences kept as data (``architectures``), and content fingerprints (``fingerprint``).

Submodules import torch and transformers; import them where they are needed.
"""
