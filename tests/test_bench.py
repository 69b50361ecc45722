"""The benchmark runner: suites (row counts as SOURCES.md states them), the content-noun tagger, the statistics on
known inputs, resume after a kill, a 2-process accelerate run, and the report from fixture rows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emphasize.bench.report import write_report
from emphasize.bench.runner import QualityConfig, read_rows, row_specs, shard
from emphasize.bench.stats import bootstrap_ci, estimate, paired_difference, per_unit
from emphasize.bench.suites import PUBLIC_FILES, load_suite, read_prompt_file
from emphasize.bench.tagger import content_nouns

EMPHASIZE = [sys.executable, "-m", "emphasize"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _sources_counts() -> dict[str, int]:
    from importlib import resources

    text = resources.files("emphasize.bench").joinpath("data", "prompts", "SOURCES.md").read_text(encoding="utf-8")
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| `([\w.]+\.csv)` \| (\d+) \|", text, re.M)}


def test_shipped_prompt_sets_have_the_rows_sources_md_states():
    counts = _sources_counts()
    assert set(counts) == {name for name, _ in PUBLIC_FILES.values()}
    for suite, (name, rows) in PUBLIC_FILES.items():
        assert len(read_prompt_file(name)) == counts[name] == rows
        assert len(load_suite(suite)) == rows


def test_csv_fields_with_commas_and_quotes_are_read_whole():
    rows = read_prompt_file("partiprompts.csv")
    assert any(r["prompt"].startswith('"G I G G L E"') for r in rows)
    assert all(set(r) == {"prompt", "category", "challenge", "note"} for r in rows)


def test_suites_select_disjoint_ranges_and_record_their_emphasis():
    a, b = load_suite("world-t2i", prompts=3), load_suite("world-t2i", prompts=3, offset=3)
    assert not {x.prompt for x in a} & {x.prompt for x in b}
    item = a[0]
    assert item.weighted_text.endswith(":2)") and item.emphasized[0]["weight"] == 2.0
    assert load_suite("world-t2i", prompts=1, offset=1000)[0].category == "3 objects"
    ae = load_suite("attend-excite", prompts=2)
    assert [e["text"] for e in ae[0].emphasized] == ["elephant", "rabbit"]
    assert all(e["weight"] == 1.0 for e in load_suite("world-grounding", prompts=1)[0].emphasized)
    edits = load_suite("world-edit", prompts=8)
    assert [e.category for e in edits] == ["segment", "keypoint", "recolour", "remove", "add", "move", "denoise",
                                           "deblur"]  # fmt: skip
    with pytest.raises(ValueError, match="unknown suite 'nope'"):
        load_suite("nope")


@pytest.mark.parametrize(
    "prompt, nouns",
    [
        ("a cat and a frog", ["cat", "frog"]),
        ("a dog with a crown", ["dog", "crown"]),
        ("A red colored car.", ["car"]),
        ("encircle the man's left shoulder in red", ["shoulder"]),
        ("A car on the left of a bus.", ["car", "bus"]),
        ("The man paints a picture of him", ["man", "picture"]),
        ("a dog running in a park", ["dog", "park"]),
        ("bond", ["bond"]),
        ("two purple squares", ["squares"]),
    ],
)
def test_tagger_finds_the_content_nouns(prompt, nouns):
    assert [prompt[a:b] for a, b in content_nouns(prompt)] == nouns


def test_statistics_on_known_inputs():
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    e = estimate([0.0, 1.0] * 50)
    assert e.mean == 0.5 and e.low < 0.5 < e.high and e.n == 100 and e.excludes_zero()
    assert not estimate([-1.0, 1.0] * 50).excludes_zero()
    assert abs((e.high - e.low) - 2 * 1.96 * 0.05) < 0.04  # the normal-theory width, sd 0.5 / sqrt(100)
    assert estimate([]).n == 0 and estimate([]).format() == "n/a"
    units = per_unit([(0, 1.0), (0, 0.0), (1, None), (2, 1.0)])
    assert units == {0: 0.5, 2: 1.0}
    d = paired_difference({0: 1.0, 1: 1.0, 2: 0.5}, {0: 0.0, 1: 0.5, 3: 9.0})
    assert d.n == 2 and d.mean == 0.75 and d.excludes_zero()


def test_rows_are_split_across_processes_without_overlap():
    specs = row_specs(QualityConfig("world-t2i", ("plain", "embed"), seeds=2, prompts=3))
    assert len(specs) == 12 and len({s.key for s in specs}) == 12
    parts = [shard(specs, i, 3) for i in range(3)]
    assert sorted(s.key for p in parts for s in p) == sorted(s.key for s in specs)


def test_quality_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="sgool"):
        QualityConfig("world-edit", ("plain", "sgool"))
    with pytest.raises(ValueError, match="world-grounding"):
        QualityConfig("world-grounding", ("importance",))
    with pytest.raises(ValueError, match="seeds=0"):
        QualityConfig("world-t2i", ("plain",), seeds=0)


def _run(out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [*EMPHASIZE, "bench", "quality", "--suite", "world-t2i", "--methods", "plain", "--seeds", "1",
           "--steps", "4", "--out", str(out), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, check=check, timeout=300)


def test_a_killed_run_resumes_without_lost_or_duplicated_rows(tmp_path):
    out = tmp_path / "run"
    cmd = [*EMPHASIZE, "bench", "quality", "--suite", "world-t2i", "--methods", "plain", "--seeds", "1",
           "--steps", "4", "--prompts", "6", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "rows").rglob("*.json")) if out.exists() else []) < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {p: p.stat().st_mtime_ns for p in (out / "rows").rglob("*.json")}
    assert 2 <= len(before) < 6
    _run(out, "--prompts", "6")
    rows = read_rows(out)
    assert sorted(r["index"] for r in rows) == list(range(6))
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # finished rows were not redone
    assert not [p for p in (out / "rows").rglob(".*")]  # no temp file is left as a row


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "run"
    _run(out, "--prompts", "1")
    result = _run(out, "--prompts", "1", "--weight", "0.5", check=False)
    assert result.returncode == 2 and "other settings" in result.stderr and "Traceback" not in result.stderr


def test_dry_run_prints_the_row_count_and_writes_nothing(tmp_path):
    result = _run(tmp_path / "dry", "--prompts", "5", "--dry-run")
    assert "5 rows" in result.stderr and "estimated" in result.stderr
    assert not (tmp_path / "dry" / "rows").exists()


@pytest.mark.slow
def test_two_accelerate_processes_share_the_rows(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "emphasize", "bench",
           "quality", "--suite", "world-t2i", "--methods", "plain,embed", "--seeds", "1", "--prompts", "2",
           "--steps", "3", "--out", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("2 rows written") == 2  # each process wrote its half
    assert len(read_rows(out)) == 4 and len({r["key"] for r in read_rows(out)}) == 4


def _fixture_rows(out: Path) -> None:
    from PIL import Image

    found = {"plain": lambda k: k % 3 == 0, "importance": lambda k: k % 3 != 2, "embed": lambda k: k % 2 == 0}
    for method in found:
        for index in range(12):
            for seed in (0, 1):
                key = f"world-t2i/{method}/{index:05d}-s{seed}"
                image = Path("images") / f"{key}.png"
                (out / image).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 64), (200, 10 * index, 50)).save(out / image)
                weighted = float(found[method](index))
                metrics = dict(weighted_found=weighted, other_found=1.0, all_present=weighted,
                               binding=None if index == 0 else 1.0, clip_score=60 + 5 * weighted)  # fmt: skip
                row = dict(key=key, suite="world-t2i", index=index, category="2 objects", prompt=f"prompt {index}",
                           method=method, seed=seed, emphasized=[], seconds=1.0, peak_mb=3.0, image=str(image),
                           metrics=metrics)  # fmt: skip
                (out / "rows" / f"{key}.json").parent.mkdir(parents=True, exist_ok=True)
                (out / "rows" / f"{key}.json").write_text(json.dumps(row))
    (out / "speed.json").write_text(json.dumps({"rows": [dict(method="plain", seconds=1.0, cpu_seconds=1.0,
                                                              peak_mb=5.0)], "ratios": {"x": 1.0}}))  # fmt: skip


def test_report_from_fixture_rows_has_tables_plots_and_grids(tmp_path):
    _fixture_rows(tmp_path)
    report = write_report(tmp_path).read_text()
    assert "## world-t2i" in report and "importance − plain" in report and "Speed and memory" in report
    for name in ("world-t2i_means.png", "world-t2i_paired.png", "world-t2i_grid.png"):
        assert (tmp_path / name).stat().st_size > 1000 and f"({name})" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    paired = summary["world-t2i"]["paired"]["importance/weighted_found"]
    assert paired["low"] > 0 and paired["n"] == 12  # a built-in +1/3 effect on 12 prompts is found
    assert summary["world-t2i"]["means"]["plain/binding"]["n"] == 11  # undefined binding is left out


def test_report_of_an_empty_directory_is_a_one_line_error(tmp_path):
    result = subprocess.run([*EMPHASIZE, "bench", "report", str(tmp_path)], capture_output=True, text=True, env=ENV)
    assert (
        result.returncode == 2 and result.stderr.startswith("emphasize: error:") and "no result rows" in result.stderr
    )
