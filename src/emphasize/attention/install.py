"""Install capture processors on a UNet's cross-attention layers, and always restore the originals.

`capture_attention` is the only place that touches processors. It goes through diffusers' public
`attn_processors` / `set_attn_processor` with a dict keyed by processor name, selects cross-attention layers by the
`Attention.is_cross_attention` attribute (never by class name), and restores the user's processors in `finally`,
also on an exception or Ctrl-C.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from emphasize.attention.control import AttentionController
from emphasize.attention.processor import AttentionCaptureProcessor


def cross_attention_layers(unet) -> list[str]:
    """Processor names (keys of `unet.attn_processors`) of the UNet's cross-attention layers."""
    from diffusers.models.attention_processor import Attention

    return [
        f"{name}.processor"
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and module.is_cross_attention
    ]


@contextlib.contextmanager
def capture_attention(unet, controller: AttentionController | None = None) -> Iterator[AttentionController]:
    """Install `AttentionCaptureProcessor` on every cross-attention layer for the duration of the block.

    Args:
        unet: a diffusers `UNet2DConditionModel` (any model with `attn_processors` / `set_attn_processor`).
        controller: shared pass state; a fresh one when None.

    Raises:
        ValueError: when the UNet has no cross-attention layers.
    """
    controller = controller or AttentionController()
    layers = set(cross_attention_layers(unet))
    if not layers:
        raise ValueError(f"{type(unet).__name__} has no cross-attention layers to capture")
    originals = dict(unet.attn_processors)
    installed = {
        name: AttentionCaptureProcessor(controller, name) if name in layers else proc
        for name, proc in originals.items()
    }
    unet.set_attn_processor(installed)
    try:
        yield controller
    finally:
        unet.set_attn_processor(originals)
        controller.store.reset()
