"""Cross-attention capture: processor (diffusers protocol), store (aggregation), context manager (install/restore)."""

from emphasize.attention.control import AttentionController
from emphasize.attention.install import capture_attention, cross_attention_layers
from emphasize.attention.processor import AttentionCaptureProcessor
from emphasize.attention.store import AttentionStore, resolve_attention_size

__all__ = [
    "AttentionCaptureProcessor",
    "AttentionController",
    "AttentionStore",
    "capture_attention",
    "cross_attention_layers",
    "resolve_attention_size",
]
