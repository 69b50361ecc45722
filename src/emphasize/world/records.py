"""Items as JSON records (one line of scenes.jsonl each), PNG input/output, atomic file writes."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np

from .captions import caption as caption_of
from .captions import spec_from_dict, spec_to_dict
from .refer import Reference
from .scene import scene_from_dict, scene_to_dict
from .tasks import KINDS, Edit, T2IItem, TaskItem, item_seed  # noqa: F401 (item_seed re-exported)

ALL_TASKS: tuple[str, ...] = ("t2i", *KINDS)


def item_id(task: str, index: int) -> str:
    """Identifier (and image file stem) of item `index` of a task."""
    return f"{task}-{index:05d}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name in the same folder ("x" mode respects the umask, unlike mkstemp's 0600)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a folder we may not write to: the first error is the one to report
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 RGB array."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 RGB array as PNG, atomically."""
    atomic_write_bytes(path, png_bytes(image))


def load_png(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a uint8 (H, W, 3) array. Raises FileNotFoundError / ValueError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"unreadable image {path}: {err}") from None


def _ref_to_dict(ref: Reference | None) -> dict | None:
    if ref is None:
        return None
    return {"shape": ref.shape, "colour": ref.colour, "size": ref.size, "position": ref.position}


def edit_to_dict(edit: Edit) -> dict:
    """JSON-ready dict of an `Edit`."""
    return {
        "kind": edit.kind,
        "target": edit.target,
        "reference": _ref_to_dict(edit.reference),
        "colour": edit.colour,
        "keypoint": edit.keypoint,
        "point": None if edit.point is None else list(edit.point),
        "direction": edit.direction,
        "shape": edit.shape,
        "size": edit.size,
        "strength": edit.strength,
    }


def edit_from_dict(data: dict) -> Edit:
    """Rebuild an `Edit` from `edit_to_dict` output. Raises ValueError on bad fields."""
    try:
        ref = data.get("reference")
        point = data.get("point")
        return Edit(
            kind=str(data["kind"]),
            target=None if data.get("target") is None else int(data["target"]),
            reference=None if ref is None else Reference(**ref),
            colour=data.get("colour"),
            keypoint=data.get("keypoint"),
            point=None if point is None else (float(point[0]), float(point[1])),
            direction=data.get("direction"),
            shape=data.get("shape"),
            size=data.get("size"),
            strength=None if data.get("strength") is None else float(data["strength"]),
        )
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"malformed edit: missing or bad field {err}") from None


def t2i_record(item: T2IItem, id: str, image_file: str) -> dict:
    """The scenes.jsonl record of a text-to-image item."""
    return {
        "id": id,
        "task": "t2i",
        "seed": item.seed,
        "size": item.size,
        "caption": item.caption,
        "spec": spec_to_dict(item.spec),
        "scene": scene_to_dict(item.scene),
        "image": image_file,
    }


def task_record(item: TaskItem, id: str, input_file: str, target_file: str) -> dict:
    """The scenes.jsonl record of an instruction-task item."""
    return {
        "id": id,
        "task": item.task,
        "kind": item.edit.kind,
        "seed": item.seed,
        "size": item.size,
        "instruction": item.instruction,
        "edit": edit_to_dict(item.edit),
        "scene": scene_to_dict(item.scene),
        "target_scene": scene_to_dict(item.target_scene),
        "input": input_file,
        "target": target_file,
    }


def check_record(record: dict) -> dict:
    """Validate the fields every record needs; raises ValueError naming the problem."""
    if not isinstance(record, dict):
        raise ValueError("record is not a JSON object")
    for key in ("id", "task", "size", "scene"):
        if key not in record:
            raise ValueError(f"record has no {key!r} field")
    if record["task"] not in ALL_TASKS:
        raise ValueError(f"unknown task {record['task']!r}; valid tasks: {', '.join(ALL_TASKS)}")
    need = (
        ("caption", "spec", "image")
        if record["task"] == "t2i"
        else ("instruction", "edit", "target_scene", "input", "target")
    )
    for key in need:
        if key not in record:
            raise ValueError(f"{record['task']} record has no {key!r} field")
    return record


def t2i_from_record(record: dict, image: np.ndarray | None = None) -> T2IItem:
    """Rebuild a text-to-image item from its record (image optional)."""
    scene = scene_from_dict(record["scene"])
    spec = spec_from_dict(record["spec"])
    text = record.get("caption") or caption_of(scene)
    empty = np.zeros((0, 0, 3), dtype=np.uint8)
    return T2IItem(text, spec, empty if image is None else image, scene, int(record["size"]), record.get("seed"))


def task_from_record(record: dict, input: np.ndarray, target: np.ndarray) -> TaskItem:
    """Rebuild an instruction-task item from its record and its input / target images."""
    return TaskItem(
        task=str(record["task"]),
        instruction=str(record["instruction"]),
        input=input,
        target=target,
        scene=scene_from_dict(record["scene"]),
        target_scene=scene_from_dict(record["target_scene"]),
        edit=edit_from_dict(record["edit"]),
        size=int(record["size"]),
        seed=record.get("seed"),
    )


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSON-lines file; ValueError names the line that is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scenes file not found: {path}")
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not JSON ({err.msg})") from None
    return records


def jsonl_text(records: list[dict]) -> str:
    """JSON-lines text of records (one compact object per line)."""
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
