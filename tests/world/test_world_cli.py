"""`emphasize world` CLI: sample then score; bad input is one line, exit 2, nothing half-written."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emphasize.world.cli import main, register

PERFECT = {
    "t2i": {"object_recall": 1.0, "all_present": 1.0, "binding": 1.0, "count_correct": 1.0},
    "segment": {"mask_iou": 1.0, "success": 1.0, "psnr": 100.0, "ssim": 1.0},
    "keypoint": {"keypoint_found": 1.0, "success": 1.0, "psnr": 100.0},
    "edit": {"success": 1.0, "psnr": 100.0, "ssim": 1.0, "preservation_psnr": 100.0},
    "enhance": {"success": 1.0, "psnr": 100.0, "ssim": 1.0},
}


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    for task in PERFECT:
        assert main(["sample", "--task", task, "--n", "12", "--seed", "3", "--out", str(root / task)]) == 0
    return root


@pytest.mark.parametrize("task", list(PERFECT))
def test_sample_then_score_targets_is_perfect(sampled, capsys, task):
    folder = sampled / task
    records = [json.loads(line) for line in (folder / "scenes.jsonl").read_text().splitlines()]
    assert len(records) == 12 and all(r["task"] == task for r in records)
    images = folder / ("images" if task == "t2i" else "target")
    assert sorted(p.name for p in images.iterdir()) == sorted(f"{r['id']}.png" for r in records)
    rows_file = sampled / f"rows_{task}.jsonl"
    rc, out, err = _run(capsys, "world", "score", "--scenes", str(folder / "scenes.jsonl"), "--images",
                        str(images), "--rows", str(rows_file))  # fmt: skip
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["task"] == task and summary["n_items"] == 12
    for key, value in PERFECT[task].items():
        assert summary[key] == pytest.approx(value), key
    if task == "keypoint":
        assert summary["keypoint_error"] < 0.5
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in records]


def test_score_inputs_is_not_perfect(sampled, capsys):
    folder = sampled / "edit"
    rc, out, _ = _run(capsys, "score", "--scenes", str(folder / "scenes.jsonl"), "--images", str(folder / "input"))
    assert rc == 0 and json.loads(out)["success"] == 0.0


def test_sample_is_deterministic(tmp_path, sampled):
    assert main(["sample", "--task", "edit", "--n", "12", "--seed", "3", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "scenes.jsonl").read_bytes() == (sampled / "edit" / "scenes.jsonl").read_bytes()
    a = np.asarray(Image.open(tmp_path / "target" / "edit-00004.png"))
    b = np.asarray(Image.open(sampled / "edit" / "target" / "edit-00004.png"))
    assert np.array_equal(a, b)


def _one_line_error(rc, out, err, *needles):
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emphasize: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_bad_images(tmp_path, sampled, capsys):
    scenes = str(sampled / "t2i" / "scenes.jsonl")
    bad = tmp_path / "imgs"
    bad.mkdir()
    for p in (sampled / "t2i" / "images").iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    Image.new("RGB", (32, 32)).save(bad / "t2i-00003.png")
    rows = tmp_path / "rows.jsonl"
    _one_line_error(*_run(capsys, "score", "--scenes", scenes, "--images", str(bad), "--rows", str(rows)),
                    "t2i-00003", "32x32", "64x64")  # fmt: skip
    assert not rows.exists()
    (bad / "t2i-00003.png").write_bytes(b"not a png")
    _one_line_error(*_run(capsys, "score", "--scenes", scenes, "--images", str(bad)), "t2i-00003", "unreadable")
    (bad / "t2i-00003.png").unlink()
    _one_line_error(*_run(capsys, "score", "--scenes", scenes, "--images", str(bad)), "t2i-00003", "not found")
    # images of another task: the names do not match
    other = str(sampled / "segment" / "scenes.jsonl")
    _one_line_error(*_run(capsys, "score", "--scenes", other, "--images", str(bad)), "segment-00000", "not found")


def test_bad_scenes_files(tmp_path, sampled, capsys):
    images = str(sampled / "t2i" / "images")
    scenes = str(sampled / "t2i" / "scenes.jsonl")
    _one_line_error(*_run(capsys, "score", "--scenes", scenes, "--images", images, "--task", "edit"),
                    "t2i-00000", "'t2i'", "'edit'")  # fmt: skip
    _one_line_error(*_run(capsys, "score", "--scenes", str(tmp_path / "none.jsonl"), "--images", images),
                    "not found")  # fmt: skip
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "t2i-00000"\n')
    _one_line_error(*_run(capsys, "score", "--scenes", str(broken), "--images", images), "broken.jsonl:1")
    records = (sampled / "t2i" / "scenes.jsonl").read_text().splitlines()
    mixed = tmp_path / "mixed.jsonl"
    seg = (sampled / "segment" / "scenes.jsonl").read_text().splitlines()[0]
    mixed.write_text(records[0] + "\n" + seg + "\n")
    _one_line_error(*_run(capsys, "score", "--scenes", str(mixed), "--images", images), "segment-00000", "'t2i'")
    strange = tmp_path / "strange.jsonl"
    strange.write_text(json.dumps({**json.loads(records[1]), "task": "paint"}) + "\n")
    _one_line_error(*_run(capsys, "score", "--scenes", str(strange), "--images", images), "t2i-00001", "'paint'")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _one_line_error(*_run(capsys, "score", "--scenes", str(empty), "--images", images), "no items")


def test_bad_sample_arguments(tmp_path, capsys):
    out = tmp_path / "out"
    _one_line_error(*_run(capsys, "sample", "--task", "paint", "--out", str(out)), "'paint'", "t2i, segment")
    _one_line_error(*_run(capsys, "sample", "--task", "edit", "--kind", "blur", "--out", str(out)), "'blur'")
    _one_line_error(*_run(capsys, "sample", "--task", "t2i", "--size", "8", "--out", str(out)), "size=8", "32..1024")
    _one_line_error(*_run(capsys, "sample", "--task", "t2i", "--n", "0", "--out", str(out)), "--n 0")
    assert not out.exists()


def test_gallery(tmp_path, capsys):
    path = tmp_path / "g.png"
    rc, _, _ = _run(capsys, "gallery", "--out", str(path), "--size", "64")
    assert rc == 0
    img = Image.open(path)
    assert img.mode == "RGB" and img.width > 400 and img.height > 300
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]  # no temporary file left behind


def test_register_into_a_host_parser():
    parser = argparse.ArgumentParser(prog="emphasize")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["world", "sample", "--task", "t2i", "--out", "x"])
    assert args.command == "world" and args.world_command == "sample" and callable(args.func)
    assert args.n == 100 and args.size == 64 and args.seed == 0


def test_cli_module_import_is_light():
    code = "import sys, emphasize.world.cli; print(any(m in sys.modules for m in ('numpy', 'scipy', 'PIL')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_iter_items_matches_the_cli(sampled):
    from itertools import islice

    from emphasize.world import iter_items

    records = [json.loads(line) for line in (sampled / "keypoint" / "scenes.jsonl").read_text().splitlines()]
    for record, item in zip(records[:4], islice(iter_items("keypoint", seed=3), 4), strict=True):
        assert item.instruction == record["instruction"] and item.seed == record["seed"]
    (resumed,) = islice(iter_items("t2i", seed=3, start=5), 1)
    t2i = [json.loads(line) for line in (sampled / "t2i" / "scenes.jsonl").read_text().splitlines()]
    assert resumed.caption == t2i[5]["caption"]


def test_textured_sampling_scores_perfectly(tmp_path, capsys):
    out = tmp_path / "tex"
    assert main(["sample", "--task", "t2i", "--n", "6", "--textured", "1", "--size", "128", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert all(r["scene"]["background"] == "textured" and r["size"] == 128 for r in records)
    capsys.readouterr()
    rc, stdout, _ = _run(capsys, "score", "--scenes", str(out / "scenes.jsonl"), "--images", str(out / "images"))
    assert rc == 0 and json.loads(stdout)["object_recall"] == 1.0
    _one_line_error(*_run(capsys, "sample", "--task", "t2i", "--textured", "2", "--out", str(out)), "--textured 2")
