"""Pictures for people: per-word attention heatmaps over the image, labelled image grids, attention-share bar
charts, atomic PNG writing with AUTOMATIC1111's `parameters` text chunk. PIL only."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, PngImagePlugin

LABEL_HEIGHT = 14  # px of caption strip under/beside each tile
TILE_MIN = 128  # tiles are upscaled (nearest) to at least this many px on the short side, so 64 px models read well


def _jet(values: np.ndarray) -> np.ndarray:
    """A small perceptual-enough colormap (blue -> cyan -> yellow -> red) for values in [0, 1] -> uint8 RGB."""
    stops = np.array([[0, 0, 128], [0, 160, 255], [255, 230, 0], [220, 0, 0]], dtype=np.float32)
    x = np.clip(values, 0, 1) * (len(stops) - 1)
    lo = np.floor(x).astype(int).clip(0, len(stops) - 2)
    frac = (x - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).astype(np.uint8)


def _upscale(image: Image.Image) -> Image.Image:
    factor = max(1, -(-TILE_MIN // min(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def heatmap_overlay(image: Image.Image, heatmap: torch.Tensor, alpha: float = 0.55) -> Image.Image:
    """Blend a `(h, w)` map in [0, 1] (any resolution) over an RGB image."""
    heat = torch.nn.functional.interpolate(
        heatmap[None, None].float(), size=(image.height, image.width), mode="bilinear"
    )
    colored = _jet(heat[0, 0].numpy())
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    return Image.fromarray((base * (1 - alpha) + colored * alpha).astype(np.uint8))


def image_grid(
    tiles: Sequence[Sequence[Image.Image]], row_labels: Sequence[str] = (), col_labels: Sequence[str] = ()
) -> Image.Image:
    """Rows x columns of equally sized tiles with text labels (rows on the left, columns on top)."""
    rows = [[_upscale(t) for t in row] for row in tiles]
    tw, th = rows[0][0].size
    left = 8 + 6 * max((len(s) for s in row_labels), default=0) if row_labels else 0
    top = LABEL_HEIGHT + 2 if col_labels else 0
    ncols = max(len(r) for r in rows)
    grid = Image.new("RGB", (left + ncols * (tw + 2), top + len(rows) * (th + 2)), "white")
    draw = ImageDraw.Draw(grid)
    for j, label in enumerate(col_labels):
        draw.text((left + j * (tw + 2) + 2, 2), label, fill="black")
    for i, row in enumerate(rows):
        y = top + i * (th + 2)
        if i < len(row_labels):
            draw.text((2, y + th // 2 - 5), row_labels[i], fill="black")
        for j, tile in enumerate(row):
            grid.paste(tile, (left + j * (tw + 2), y))
    return grid


def attention_grid(image: Image.Image, heatmaps: torch.Tensor, labels: Sequence[str]) -> Image.Image:
    """The image followed by one heatmap overlay per word, labelled."""
    tiles = [image] + [heatmap_overlay(image, heatmaps[k]) for k in range(len(labels))]
    return image_grid([tiles], col_labels=["image", *labels])


TEMP_MARK = ".emphasize-tmp-"  # temp files are `.NAME.emphasize-tmp-PID-RANDOM.SUFFIX` next to the target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete temp files that a killed writer of `path` left behind (their writer's process is gone)."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}{TEMP_MARK}*"):
        try:
            pid = int(tmp.name[len(f".{path.name}{TEMP_MARK}") :].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def save_atomic(path: str | os.PathLike, write) -> Path:
    """Call `write(tmp_path)` on a temporary file next to `path`, then rename it into place (no partial files).

    The file gets the permissions a plain `open()` would give it (the umask's, not mkstemp's 0600); temp files of
    earlier writers of the same path that were killed mid-write are removed first.
    """
    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}{os.getpid()}-", suffix=path.suffix)
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_png(image: Image.Image, path: str | os.PathLike, parameters: str | None = None) -> Path:
    """Write a PNG atomically, with AUTOMATIC1111's `parameters` text chunk when given."""
    info = None
    if parameters is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters)
    return save_atomic(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def saliency_figure(image: Image.Image, saliency: torch.Tensor, boxes: Sequence[dict]) -> Image.Image:
    """The image, and the saliency map over it with the salient boxes (dicts with top/left/bottom/right) drawn."""
    overlay = heatmap_overlay(image, saliency)
    draw = ImageDraw.Draw(overlay)
    for box in boxes:
        draw.rectangle([box["left"], box["top"], box["right"] - 1, box["bottom"] - 1], outline=(255, 255, 255))
    return image_grid([[image, overlay]], col_labels=["image", f"saliency, {len(boxes)} salient boxes"])


SHARE_COLORS = ((150, 150, 150), (230, 120, 20))  # bar colours of the series: before (plain) and after (method)


def share_chart(
    labels: Sequence[str],
    series: Sequence[Sequence[float]],
    names: Sequence[str] = ("plain", "method"),
    title: str = "attention share per word",
) -> Image.Image:
    """Grouped bars of each word's attention share (in [0, 1]), one bar per series (e.g. plain vs the method).

    Args:
        labels: one label per word.
        series: one sequence of shares per series, each as long as `labels`.
        names: the series' names, for the legend.
        title: drawn above the bars.
    """
    if any(len(values) != len(labels) for values in series):
        raise ValueError(f"every series needs {len(labels)} values, one per label")
    bar, gap, plot_h, left, top, bottom = 22, 26, 150, 44, 34, 34
    group_w = bar * len(series) + gap
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = list(names[: len(series)])
    legend_w = sum(13 + measure.textlength(name) + 12 for name in names)
    width = int(max(left + group_w * len(labels) + gap, left + measure.textlength(title) + 16 + legend_w))
    chart = Image.new("RGB", (width, top + plot_h + bottom), "white")
    draw = ImageDraw.Draw(chart)
    draw.text((left, 4), title, fill="black")
    peak = max([v for values in series for v in values] + [1e-9])
    top_value = min(1.0, math.ceil(peak * 10 + 1e-9) / 10)  # axis to the next 10 %, at most 100 %
    tick = 0.1 if top_value <= 0.5 + 1e-9 else 0.2  # grid lines at whole tens of percent
    for k in range(int(round(top_value / tick)) + 1):  # grid lines and axis labels
        value = min(top_value, k * tick)
        y = top + plot_h - round(plot_h * value / top_value)
        draw.line([(left, y), (width - 4, y)], fill=(225, 225, 225))
        draw.text((2, y - 6), f"{value:.0%}", fill=(90, 90, 90))
    x_legend = left + measure.textlength(title) + 16
    for s, name in enumerate(names):
        color = SHARE_COLORS[s % len(SHARE_COLORS)]
        draw.rectangle([x_legend, 6, x_legend + 9, 15], fill=color)
        draw.text((x_legend + 13, 4), name, fill="black")
        x_legend += 13 + measure.textlength(name) + 12
    for i, label in enumerate(labels):
        x0 = left + gap // 2 + i * group_w
        for s, values in enumerate(series):
            value = max(0.0, float(values[i]))
            y = top + plot_h - round(plot_h * min(value, top_value) / top_value)
            x = x0 + s * bar
            draw.rectangle([x, y, x + bar - 3, top + plot_h], fill=SHARE_COLORS[s % len(SHARE_COLORS)])
            draw.text((x, max(top, y - 12)), f"{value:.0%}", fill="black")
        short = label if measure.textlength(label) <= group_w else label[: max(3, group_w // 7)] + "…"
        draw.text((x0, top + plot_h + 6), short, fill="black")
    draw.line([(left, top + plot_h), (width - 4, top + plot_h)], fill="black")
    return chart
