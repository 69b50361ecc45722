"""Named colours of the embedded world and the background they are drawn on.

The six object colours are saturated sRGB values chosen far apart from each other (at least ~90 apart in RGB)
and from the light-grey background (at least ~200 apart), so that a nearest-colour rule stays right under noise,
blur and moderate colour drift.
"""

from __future__ import annotations

import numpy as np

# name -> sRGB, uint8 values. Order is stable: it is the index order used by the detector.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (240, 125, 20),
    "yellow": (235, 215, 30),
    "green": (40, 165, 60),
    "blue": (40, 85, 215),
    "purple": (140, 55, 180),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# plain background: light grey, far from every object colour
BACKGROUND: tuple[int, int, int] = (232, 232, 232)

# (K, 3) float32 palette in COLOUR_NAMES order
PALETTE = np.array([COLOURS[name] for name in COLOUR_NAMES], dtype=np.float32)


def colour_rgb(name: str) -> tuple[int, int, int]:
    """sRGB triple of a named colour.

    Args:
        name (`str`): one of `COLOUR_NAMES`.
    """
    try:
        return COLOURS[name]
    except KeyError:
        raise ValueError(f"unknown colour {name!r}; valid colours: {', '.join(COLOUR_NAMES)}") from None


def nearest_colour(rgb) -> str:
    """Name of the palette colour nearest (Euclidean, sRGB) to an RGB triple.

    Args:
        rgb: three numbers in 0..255.
    """
    value = np.asarray(rgb, dtype=np.float32).reshape(3)
    return COLOUR_NAMES[int(np.argmin(((PALETTE - value) ** 2).sum(1)))]


def colour_distance(a: str, b: str) -> float:
    """Euclidean sRGB distance between two named colours."""
    return float(np.linalg.norm(np.subtract(colour_rgb(a), colour_rgb(b), dtype=np.float32)))
