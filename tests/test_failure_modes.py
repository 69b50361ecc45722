"""benchmarks/bench_failure_modes.py on rendered world scenes whose answer is known."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from PIL import Image

from emphasize.world import Scene, SceneObject, render

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_failure_modes.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_failure_modes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_dir(tmp_path: Path, weighted: list[str]) -> Path:
    """A world-t2i run with one rendered image (a red circle, a blue square) per weighted phrase."""
    scene = Scene(
        objects=(
            SceneObject("circle", "red", "large", 0.3, 0.25, 0.5, 1, 0),
            SceneObject("square", "blue", "large", 0.3, 0.75, 0.5, 1, 2),
        )
    )
    image = Image.fromarray(render(scene))
    for k, phrase in enumerate(weighted):
        colour, shape = phrase.split()
        key = f"world-t2i/plain/{k:05d}-s0"
        (tmp_path / "images" / key).parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "images" / f"{key}.png")
        row = dict(prompt=f"a red circle and a {colour} {shape}", emphasized=[dict(text=phrase, weight=2.0)],
                   image=f"images/{key}.png")  # fmt: skip
        (tmp_path / "rows" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "rows" / f"{key}.json").write_text(json.dumps(row))
    return tmp_path


def test_each_failure_mode_is_told_apart(tmp_path):
    module = _script()
    root = _run_dir(tmp_path, ["blue square", "green square", "blue star"])
    rows = [json.loads(p.read_text()) for p in sorted((root / "rows" / "world-t2i" / "plain").glob("*.json"))]
    assert [module.failure_mode(r, root) for r in rows] == ["found", "colour_absent", "wrong_shape"]


def test_the_table_and_a_missing_run(tmp_path, capsys):
    module = _script()
    root = _run_dir(tmp_path, ["blue square", "green square"])
    assert module.main([str(root)]) == 0
    assert "| plain | 2 | 0.500 | 0.000 | 0.500 |" in capsys.readouterr().out
    assert module.main([str(tmp_path / "nothing")]) == 2
    assert "not a world-t2i run" in capsys.readouterr().err
