"""Copy trained models into the package (`emphasize/models/embedded/`), weights as float16 safetensors, and write
`MANIFEST.json` (every shipped file with its size and sha256), which the test suite checks.

float16 halves the package; every loader casts back (`from_pretrained(..., dtype=torch.float32)`, and
`emphasize.models.load` loads float32 by default).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch

from emphasize.train.common import TrainError, atomic_write_json, public_mode

MANIFEST = "MANIFEST.json"
COMPONENTS = ("t2i", "edit", "clip", "testbed")  # embedded sub-directories (testbed: a t2i pipeline)
SKIP = {"checkpoint.pt"}  # training state never ships


def embedded_dir() -> Path:
    from emphasize.models.load import EMBEDDED_DIR

    return EMBEDDED_DIR


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _to_float16(src: Path, dst: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dst), metadata={"format": "pt"})
    public_mode(dst)


def ship_model(source: Path, name: str, dest: Path | None = None, float16: bool = True) -> Path:
    """Replace `dest/name` by a copy of the exported model in `source` (a recipe's --out or its `model/`).

    Args:
        source: the trained model directory.
        name: `t2i`, `edit`, `clip` or `testbed` (a t2i pipeline, `embedded:testbed`).
        dest: the embedded directory (the package's by default).
        float16: store float tensors of `*.safetensors` as float16.
    """
    if name not in COMPONENTS:
        raise TrainError(f"unknown component {name!r}; valid: {', '.join(COMPONENTS)}")
    source = Path(source)
    if (source / "model").is_dir():
        source = source / "model"
    marker = "config.json" if name == "clip" else "model_index.json"
    if not (source / marker).is_file():
        raise TrainError(f"{source}: not an exported {name} model (no {marker})")
    dest = Path(dest) if dest is not None else embedded_dir()
    staging = dest / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    for path in sorted(source.rglob("*")):
        if path.is_dir() or path.name in SKIP:
            continue
        target = staging / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if float16 and path.suffix == ".safetensors":
            _to_float16(path, target)
        else:
            shutil.copy2(path, target)
            public_mode(target)
    final = dest / name
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    write_manifest(dest)
    return final


def manifest_entries(dest: Path) -> dict[str, dict]:
    """relative path -> {bytes, sha256} of every file under the shipped components."""
    entries = {}
    for name in COMPONENTS:
        for path in sorted((dest / name).rglob("*")) if (dest / name).is_dir() else []:
            if path.is_file():
                entries[path.relative_to(dest).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256(path)}
    return entries


def write_manifest(dest: Path | None = None) -> Path:
    """Write `MANIFEST.json` for what is shipped in `dest` now."""
    dest = Path(dest) if dest is not None else embedded_dir()
    entries = manifest_entries(dest)
    total = sum(e["bytes"] for e in entries.values())
    shipped = [name for name in COMPONENTS if (dest / name).is_dir()]
    atomic_write_json(dest / MANIFEST, {"components": shipped, "total_bytes": total, "files": entries})
    return dest / MANIFEST
