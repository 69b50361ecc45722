"""`get_detector(spec)`: build a saliency detector from a short string, as the CLI and configs name them."""

from __future__ import annotations

from typing import Any

from emphasize.saliency.attention import AttentionSaliencyDetector
from emphasize.saliency.base import SaliencyDetector
from emphasize.saliency.spectral import SpectralResidualConfig, SpectralResidualDetector
from emphasize.saliency.transalnet import TranSalNetConfig, TranSalNetDetector, load_transalnet

SPECS = ("spectral", "attention", "transalnet:PATH")  # what `get_detector` understands


def get_detector(spec: str, **kwargs: Any) -> SaliencyDetector:
    """Build a detector from its spec.

    Args:
        spec: `spectral` (spectral residual, no weights), `attention` (cross-attention maps supplied by the caller)
            or `transalnet:PATH` (TranSalNet-Res loaded from the `.pth` at PATH; everything after the first colon is
            the path). Case-insensitive name, surrounding spaces ignored.
        **kwargs: passed on: `SpectralResidualConfig` fields for `spectral`; `maps`, `token_indices` for
            `attention`; `device`, `dtype` for `load_transalnet` and `TranSalNetConfig` fields for `transalnet`.

    Raises:
        ValueError: unknown spec, missing path, or bad keyword arguments.
        FileNotFoundError: the TranSalNet checkpoint does not exist.
    """
    name, sep, arg = spec.strip().partition(":")
    name = name.strip().lower()
    if name == "spectral" and not sep:
        return SpectralResidualDetector(SpectralResidualConfig(**kwargs))
    if name == "attention" and not sep:
        return AttentionSaliencyDetector(**kwargs)
    if name == "transalnet":
        if not arg.strip():
            raise ValueError("transalnet needs a checkpoint path: 'transalnet:/path/to/TranSalNet_Res.pth'")
        load_kwargs = {k: kwargs.pop(k) for k in ("device", "dtype") if k in kwargs}
        config = TranSalNetConfig(**kwargs)
        return TranSalNetDetector(load_transalnet(arg.strip(), **load_kwargs), config)
    raise ValueError(f"unknown saliency detector {spec!r}; valid: {', '.join(SPECS)}")
