"""Saliency detectors behind one interface: `detector(images (B,3,H,W) in [0,1]) -> (B,1,H,W) in [0,1]`.

- `spectral`: spectral residual (Hou & Zhang 2007), no weights;
- `attention`: the prompt's content-token cross-attention from the last sampling pass;
- `transalnet:PATH`: TranSalNet-Res (Lou et al. 2022) in plain PyTorch, loading the published checkpoint.
"""

from emphasize.saliency.attention import AttentionSaliencyDetector, attention_saliency
from emphasize.saliency.base import SaliencyDetector, normalize_maps
from emphasize.saliency.evaluate import auc_judd, nss
from emphasize.saliency.registry import SPECS, get_detector
from emphasize.saliency.spectral import SpectralResidualConfig, SpectralResidualDetector, spectral_residual_saliency
from emphasize.saliency.transalnet import (
    Letterbox,
    TranSalNetConfig,
    TranSalNetDetector,
    TranSalNetRes,
    letterbox,
    letterbox_geometry,
    load_transalnet,
    unletterbox,
)

__all__ = [
    "SPECS",
    "AttentionSaliencyDetector",
    "Letterbox",
    "SaliencyDetector",
    "SpectralResidualConfig",
    "SpectralResidualDetector",
    "TranSalNetConfig",
    "TranSalNetDetector",
    "TranSalNetRes",
    "attention_saliency",
    "auc_judd",
    "get_detector",
    "letterbox",
    "letterbox_geometry",
    "load_transalnet",
    "normalize_maps",
    "nss",
    "spectral_residual_saliency",
    "unletterbox",
]
