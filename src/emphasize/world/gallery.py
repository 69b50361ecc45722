"""A gallery image of the world for the README: captions with renders, and task inputs with targets."""

from __future__ import annotations

from .tasks import KINDS, sample_t2i, sample_task

_PAD = 8
_LINE = 13
_TEXT_LINES = 4


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def _form(item) -> str:
    spec = item.spec
    if spec.relation is not None:
        return "relation"
    if len(set(spec.objects)) < len(spec.objects):
        return "count"
    return f"list{len(spec.objects)}"


def _varied_t2i(seed: int, size: int, n: int) -> list:
    """`n` text-to-image items from consecutive seeds, taking caption forms in turn (relation, count, ...)."""
    forms = ["list1", "list2", "relation", "count", "list3"]
    picked, s = [], seed
    while len(picked) < n and s < seed + 10_000:
        item = sample_t2i(s, size)
        want = forms[len(picked) % len(forms)]
        if _form(item) == want:
            picked.append(item)
        s += 1
    return picked


def make_gallery(seed: int = 0, size: int = 96, n_t2i: int = 8, columns: int = 4):
    """A PIL image: a row of text-to-image renders with captions, then one input -> target pair (with its
    instruction) for every task kind.

    Args:
        seed (`int`): first seed; items use consecutive seeds.
        size (`int`): side of each render in pixels.
        n_t2i (`int`): number of caption + render cells.
        columns (`int`): input/target pairs per row.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(11)
    cell_h = size + _PAD + _TEXT_LINES * _LINE
    pair_w = 2 * size + _PAD
    width = max(n_t2i * (size + _PAD), columns * (pair_w + 2 * _PAD)) + _PAD
    kinds = [(task, kind) for task, ks in KINDS.items() for kind in ks]
    rows = 1 + -(-len(kinds) // columns)
    height = 2 * _LINE + rows * (cell_h + _PAD + _LINE) + _PAD
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    y = _PAD
    draw.text((_PAD, y), "text-to-image: caption -> render", fill=(0, 0, 0), font=font)
    y += _LINE + 4
    for i, item in enumerate(_varied_t2i(seed, size, n_t2i)):
        x = _PAD + i * (size + _PAD)
        canvas.paste(Image.fromarray(item.image), (x, y))
        for j, line in enumerate(_wrap(draw, item.caption, font, size)[:_TEXT_LINES]):
            draw.text((x, y + size + 2 + j * _LINE), line, fill=(40, 40, 40), font=font)
    y += cell_h + _PAD
    draw.text((_PAD, y), "instruction tasks: input -> target", fill=(0, 0, 0), font=font)
    y += _LINE + 4
    for n, (task, kind) in enumerate(kinds):
        item = sample_task(task, seed + n, size, kind=kind)
        x = _PAD + (n % columns) * (pair_w + 2 * _PAD)
        yy = y + (n // columns) * (cell_h + _PAD)
        canvas.paste(Image.fromarray(item.input), (x, yy))
        canvas.paste(Image.fromarray(item.target), (x + size + _PAD, yy))
        draw.text((x + size + 1, yy + size // 2 - 6), ">", fill=(0, 0, 0), font=font)
        text = f"[{kind}] {item.instruction}"
        for j, line in enumerate(_wrap(draw, text, font, pair_w)[:_TEXT_LINES]):
            draw.text((x, yy + size + 2 + j * _LINE), line, fill=(40, 40, 40), font=font)
    used = y + rows * (cell_h + _PAD) - (cell_h + _PAD) + _PAD
    return canvas.crop((0, 0, width, min(height, used + _PAD)))
