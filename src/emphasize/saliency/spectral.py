"""Spectral residual saliency (Hou & Zhang, "Saliency Detection: A Spectral Residual Approach", CVPR 2007).

The log amplitude spectrum of natural images is locally smooth; what sticks out of its 3x3 local average (the
"spectral residual") is what sticks out of the image. Keeping the phase and inverting gives the saliency map:

    A = log|FFT(I)|,  P = angle(FFT(I)),  R = A - box3x3(A),  S = gauss * |IFFT(exp(R + iP))|^2

Defaults follow the authors' MATLAB reference: grayscale, 64 px working size, 3x3 box with replicated borders,
Gaussian of sigma 2.5 working pixels, min-max normalization; one addition, a small amplitude floor relative to the
mean amplitude before the log (see `SpectralResidualConfig.amplitude_floor`). No weights, no OpenCV; batched torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emphasize.saliency.base import check_images, normalize_maps

# ITU-R BT.601 luma weights, as in PIL's "L" mode and OpenCV's RGB2GRAY
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class SpectralResidualConfig:
    working_size: int = 64  # long side (px) of the grayscale image the spectrum is taken of; the paper uses 64
    box_size: int = 3  # side of the box filter that smooths the log amplitude spectrum (odd)
    blur_sigma: float = 2.5  # std of the Gaussian that smooths the squared-magnitude map, in working pixels
    blur_truncate: float = 2.0  # Gaussian kernel radius in sigmas (2.0 at sigma 2.5: the reference's ~10-tap kernel)
    amplitude_floor: float = 1e-3  # added to |FFT| before the log, as a fraction of its mean: exact spectral zeros
    # (flat synthetic images) would otherwise dominate the residual with log(0)-sized values

    def __post_init__(self) -> None:
        if not 8 <= self.working_size <= 1024:
            raise ValueError(f"working_size must be in [8, 1024], got {self.working_size}")
        if self.box_size < 1 or self.box_size % 2 == 0 or self.box_size > 15:
            raise ValueError(f"box_size must be an odd integer in [1, 15], got {self.box_size}")
        if not 0.0 <= self.blur_sigma <= 64.0 or math.isnan(self.blur_sigma):
            raise ValueError(f"blur_sigma must be in [0, 64], got {self.blur_sigma}")
        if not 0.5 <= self.blur_truncate <= 6.0:
            raise ValueError(f"blur_truncate must be in [0.5, 6], got {self.blur_truncate}")
        if not 0.0 < self.amplitude_floor < 1.0:
            raise ValueError(f"amplitude_floor must be in (0, 1), got {self.amplitude_floor}")


def working_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Aspect-preserving (h, w) with the long side equal to `long_side` (each side at least 1).

    Args:
        height: image height in pixels.
        width: image width in pixels.
        long_side: target length of the longer side.
    """
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 2.0) -> torch.Tensor:
    """Separable Gaussian blur with replicated borders.

    Args:
        maps: (B, 1, h, w) float.
        sigma: standard deviation in pixels; 0 returns the input unchanged.
        truncate: kernel radius in standard deviations.
    """
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(truncate * sigma))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()  # (2r+1,)
    out = F.pad(maps, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))  # blur along W
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1))  # blur along H


def spectral_residual_saliency(images: torch.Tensor, config: SpectralResidualConfig | None = None) -> torch.Tensor:
    """Spectral residual saliency maps of a batch of images, at image size.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        config: working size and filter sizes; `SpectralResidualConfig()` when None.

    Returns:
        (B, 1, H, W) float32, each map min-max normalized to span [0, 1] (a constant result gives zeros).
    """
    check_images(images)
    config = config or SpectralResidualConfig()
    height, width = images.shape[-2:]
    x = images.detach().float()
    luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    gray = (x * luma).sum(dim=1, keepdim=True)  # (B, 1, H, W)

    # 1. small working image: the residual is defined on a coarse spectrum (64 px in the paper)
    h, w = working_shape(height, width, config.working_size)
    gray = F.interpolate(gray, size=(h, w), mode="bilinear", align_corners=False, antialias=True)  # (B, 1, h, w)

    # 2. log amplitude minus its local average; the phase is kept as is
    spectrum = torch.fft.fft2(gray)  # (B, 1, h, w) complex
    amplitude = spectrum.abs()
    floor = config.amplitude_floor * amplitude.mean(dim=(-2, -1), keepdim=True) + torch.finfo(amplitude.dtype).tiny
    log_amp = torch.log(amplitude + floor)
    pad = config.box_size // 2
    smooth = F.avg_pool2d(F.pad(log_amp, (pad, pad, pad, pad), mode="replicate"), config.box_size, stride=1)
    residual = log_amp - smooth  # (B, 1, h, w)

    # 3. back to the image domain with the original phase; squared magnitude, then a Gaussian
    recon = torch.fft.ifft2(torch.polar(torch.exp(residual), spectrum.angle()))
    sal = recon.abs() ** 2  # (B, 1, h, w)
    sal = gaussian_blur(sal, config.blur_sigma, config.blur_truncate)

    # 4. back to image size; normalize per image
    sal = F.interpolate(sal, size=(height, width), mode="bilinear", align_corners=False)
    return normalize_maps(sal)  # (B, 1, H, W)


class SpectralResidualDetector:
    """Saliency detector (the `SaliencyDetector` contract) running `spectral_residual_saliency`; no weights."""

    def __init__(self, config: SpectralResidualConfig | None = None) -> None:
        """Hold the configuration.

        Args:
            config: see `SpectralResidualConfig`.
        """
        self.config = config or SpectralResidualConfig()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Saliency maps at image size.

        Args:
            images: (B, 3, H, W) RGB in [0, 1].

        Returns:
            (B, 1, H, W) in [0, 1], dtype and device of `images`.
        """
        return spectral_residual_saliency(images, self.config).to(images.dtype)

    def __repr__(self) -> str:
        return f"SpectralResidualDetector({self.config})"
