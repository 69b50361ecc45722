"""The referring-expression editing suite: the discriminating word alone tells the referred object from the
distractor, and `landing` puts an edit on the object it was applied to (exact targets, inputs, and the same edit
applied to the distractor)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emphasize.bench.suites import load_suite, referring_item
from emphasize.world import blend_mask, draw_ring, object_masks, render
from emphasize.world.refer import Reference, resolve
from emphasize.world.referring import DISCRIMINATORS, REFER_KINDS, landing, sample_referring
from emphasize.world.scene import with_object

ITEMS = [
    sample_referring(10**9 + k, kind=kind, discriminator=disc)
    for k in range(3)
    for kind in REFER_KINDS
    for disc in DISCRIMINATORS
]


def _without_word(item) -> list[int]:
    """Objects matched by the stated reference once its discriminating word is dropped."""
    ref = item.task.edit.reference
    if item.discriminator == "shape":  # the colour alone
        return [i for i, o in enumerate(item.task.scene.objects) if o.colour == ref.colour]
    field = item.discriminator
    return resolve(item.task.scene.objects, Reference(**{**ref.__dict__, field: None}))


@pytest.mark.parametrize("item", ITEMS, ids=lambda it: f"{it.task.edit.kind}-{it.discriminator}")
def test_only_the_discriminating_word_makes_the_reference_unambiguous(item):
    text = item.task.instruction
    assert text[item.span[0] : item.span[1]] == item.word
    assert resolve(item.task.scene.objects, item.task.edit.reference) == [item.target]
    assert {item.target, item.distractor} <= set(_without_word(item))
    assert item.target != item.distractor


def _on_distractor(item) -> np.ndarray:
    """The same edit applied to the distractor instead."""
    task, d = item.task, item.distractor
    edit = task.edit
    if edit.kind == "segment":
        return blend_mask(task.input, object_masks(task.scene, task.size)[d], edit.colour, edit.strength)
    if edit.kind == "keypoint":
        from emphasize.world.referring import _keypoint_of

        x, y = _keypoint_of(task.scene, d, edit.keypoint, task.size)
        return draw_ring(task.input, (x, y), 0.07 * task.size, 0.03 * task.size, edit.colour)
    return render(with_object(task.scene, d, colour=edit.colour), task.size)


@pytest.mark.parametrize("item", ITEMS, ids=lambda it: f"{it.task.edit.kind}-{it.discriminator}")
def test_landing_tells_referred_distractor_and_nowhere_apart(item):
    exact = landing(item, item.task.target)
    assert exact["landed"] == "referred" and exact["on_referred"] == 1 and exact["success"] == 1
    if item.task.edit.kind == "recolour" and item.task.scene.objects[item.distractor].colour == item.task.edit.colour:
        return  # recolouring the distractor into its own colour changes nothing to detect
    assert landing(item, item.task.input)["landed"] == "nowhere"
    wrong = landing(item, _on_distractor(item))
    assert wrong["landed"] == "distractor" and wrong["on_distractor"] == 1 and wrong["on_referred"] == 0


def test_task_landing_on_a_standard_task_against_each_other_object():
    from emphasize.world import sample_task
    from emphasize.world.referring import task_landing

    task = next(t for s in range(10**9, 10**9 + 200) if len((t := sample_task("segment", s)).scene.objects) == 3)
    others = [j for j in range(3) if j != task.edit.target]
    assert [task_landing(task, j, task.target)["landed"] for j in others] == ["referred", "referred"]
    masks = object_masks(task.scene, task.size)
    wrong = blend_mask(task.input, masks[others[1]], task.edit.colour, task.edit.strength)
    assert [task_landing(task, j, wrong)["landed"] for j in others] == ["nowhere", "distractor"]
    with pytest.raises(ValueError, match="'denoise'"):
        task_landing(sample_task("enhance", 0, kind="denoise"), 0, task.target)


def test_items_are_pure_functions_of_their_seed_and_bad_values_are_named():
    a, b = sample_referring(7, kind="keypoint"), sample_referring(7, kind="keypoint")
    assert a.task.instruction == b.task.instruction and np.array_equal(a.task.input, b.task.input)
    with pytest.raises(ValueError, match="'rotate'"):
        sample_referring(0, kind="rotate")
    with pytest.raises(ValueError, match="'texture'"):
        sample_referring(0, discriminator="texture")


def test_the_suite_cycles_kinds_and_discriminators_and_weights_the_word():
    items = load_suite("world-refer", prompts=12, offset=100, weight=2.0)
    assert {i.category for i in items} == {f"{k}/{d}" for k in REFER_KINDS for d in DISCRIMINATORS}
    for item in items:
        ((a, e, w),) = item.emphasis
        assert w == 2.0 and item.prompt[a:e] == referring_item(item.index).word
    assert [i.index for i in load_suite("world-refer", prompts=3, offset=5)] == [5, 6, 7]


def test_a_world_refer_run_scores_where_the_edit_landed(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "emphasize", "bench", "quality", "--suite", "world-refer", "--methods",
           "plain,importance", "--seeds", "1", "--prompts", "2", "--steps", "3", "--out", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ,
                            "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    from emphasize.bench.runner import read_rows

    rows = read_rows(out)
    assert len(rows) == 4
    assert all(r["metrics"]["landed"] in ("referred", "distractor", "nowhere", "both") for r in rows)
    assert all(r["emphasized"][0]["weight"] == 2.0 for r in rows)
    for r in rows:
        m = r["metrics"]
        assert 0 <= m["word_mass_referred"] <= 1 and 0 <= m["word_mass_distractor"] <= 1
        assert m["word_mass_referred"] + m["word_mass_distractor"] <= 1 + 1e-6  # the two masks do not overlap
        assert m["word_mass_chance"] == object_masks(referring_item(r["index"]).task.scene)[
            referring_item(r["index"]).target].mean()  # fmt: skip
        assert m["word_pointing"] in (0.0, 1.0)


def test_referring_grounding_reads_a_map_on_the_referred_object():
    import torch
    import torch.nn.functional as F

    from emphasize.bench.runner import referring_grounding

    item = referring_item(3)
    masks = object_masks(item.task.scene)
    on_target = F.avg_pool2d(torch.from_numpy(masks[item.target].astype(np.float32))[None], 4)[0]  # (16, 16)
    scores = referring_grounding(item, on_target)
    assert scores["word_mass_referred"] > 0.6 and scores["word_pointing"] == 1.0
    assert scores["word_mass_distractor"] < 0.05
    assert scores["word_mass_chance"] == pytest.approx(masks[item.target].mean())
    uniform = referring_grounding(item, torch.ones(16, 16))
    assert uniform["word_mass_referred"] == pytest.approx(uniform["word_mass_chance"], abs=1e-6)


def test_the_guidance_rule_reaches_the_edit_suites_and_is_checked(tmp_path):
    from emphasize.bench.runner import QualityConfig, read_rows, run_quality

    with pytest.raises(ValueError, match="guidance_rule='cfg'"):
        QualityConfig("world-refer", ("plain",), guidance_rule="cfg")
    with pytest.raises(ValueError, match="for the edit suites only, not world-t2i"):
        QualityConfig("world-t2i", ("plain",), guidance_rule="ip2p")
    images = {}
    for rule in ("ip2p", "instructdiffusion"):
        config = QualityConfig("world-refer", ("plain",), seeds=1, prompts=1, steps=2, guidance_rule=rule)
        run_quality(config, tmp_path / rule, progress=False)
        (row,) = read_rows(tmp_path / rule)
        images[rule] = np.asarray(Image.open(tmp_path / rule / row["image"]), dtype=np.int16)
    assert np.abs(images["ip2p"] - images["instructdiffusion"]).mean() > 0.5


def test_refer_pairs_counts_edits_moved_onto_and_off_the_referred_object():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "refer_pairs.py"
    spec = importlib.util.spec_from_file_location("refer_pairs", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def row(method, index, seed, category, on):
        return {"suite": "world-refer", "method": method, "index": index, "seed": seed, "category": category,
                "metrics": {"on_referred": on, "landed": "referred" if on else "nowhere"}}  # fmt: skip

    # (plain, importance) landings: on->off, off->on, on->on, off->off; one importance row has no plain pair
    cases = [("recolour/size", 1, 0), ("recolour/size", 0, 1), ("segment/position", 1, 1), ("segment/position", 0, 0)]
    rows = [row("plain", i, 7, cat, p) for i, (cat, p, _) in enumerate(cases)]
    rows += [row("importance", i, 7, cat, q) for i, (cat, _, q) in enumerate(cases)]
    rows.append(row("importance", 9, 7, "recolour/size", 1))
    result = module.landing_pairs(rows, "importance")
    assert (result["pairs"], result["moved_on"], result["moved_off"]) == (4, 1, 1)
    assert result["moves"] == {("nowhere", "referred"): 1, ("referred", "nowhere"): 1}
    assert result["per_discriminator"] == {"position": (2, 0.5, 0.0), "size": (2, 0.5, 0.0)}
    assert module.landing_pairs(rows, "attend-excite")["pairs"] == 0
