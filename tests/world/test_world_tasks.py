"""Instruction tasks: valid, exact targets for every family; unambiguous references; determinism."""

from __future__ import annotations

import numpy as np
import pytest

from emphasize.world import (
    KEYPOINTS,
    KINDS,
    PSNR_CAP,
    TASKS,
    TaskConfig,
    object_masks,
    psnr,
    reference_text,
    render,
    resolve,
    sample_t2i,
    sample_task,
    task_metrics,
)
from emphasize.world.refer import references

ALL_KINDS = [(task, kind) for task in TASKS for kind in KINDS[task]]


def _check_item(item, size):
    assert item.input.shape == item.target.shape == (size, size, 3)
    assert item.input.dtype == item.target.dtype == np.uint8
    assert isinstance(item.instruction, str) and item.instruction
    edit, scene, after = item.edit, item.scene, item.target_scene
    if edit.reference is not None:
        assert resolve(scene.objects, edit.reference) == [edit.target]
        assert reference_text(edit.reference) in item.instruction
    changed = np.any(item.input != item.target, axis=-1)
    assert changed.any(), "the target must differ from the input"
    kind = edit.kind
    if kind == "segment":
        mask = object_masks(scene, size)[edit.target]
        assert np.array_equal(changed, mask)
        assert edit.colour in item.instruction and edit.colour != scene.objects[edit.target].colour
    elif kind == "keypoint":
        assert edit.keypoint in KEYPOINTS[scene.objects[edit.target].shape]
        assert edit.keypoint in item.instruction and edit.colour in item.instruction
        ys, xs = np.nonzero(changed)
        cfg = TaskConfig()
        reach = (cfg.ring_radius + cfg.ring_width) * size + 1.5
        assert np.hypot(xs + 0.5 - edit.point[0] * size, ys + 0.5 - edit.point[1] * size).max() <= reach
    elif kind in ("recolour", "remove", "add", "move"):
        assert np.array_equal(item.input, render(scene, size))
        assert np.array_equal(item.target, render(after, size))
        n, m = len(scene.objects), len(after.objects)
        if kind == "recolour":
            assert m == n and after.objects[edit.target].colour == edit.colour != scene.objects[edit.target].colour
            assert edit.colour in item.instruction
        elif kind == "remove":
            assert m == n - 1 and scene.objects[edit.target] not in after.objects
        elif kind == "add":
            new = after.objects[edit.target]
            assert m == n + 1 and edit.target == n and (new.shape, new.colour) == (edit.shape, edit.colour)
            assert f"{new.colour} {new.shape}" in item.instruction
            last = scene.grid - 1
            assert {"left": new.col == 0, "right": new.col == last, "top": new.row == 0, "bottom": new.row == last}[
                edit.direction
            ]
        else:
            a, b = scene.objects[edit.target], after.objects[edit.target]
            step = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[edit.direction]
            dr, dc = b.row - a.row, b.col - a.col
            assert (np.sign(dr), np.sign(dc)) == step
        occupied = [(o.row, o.col) for o in after.objects]
        assert len(set(occupied)) == len(occupied)
    else:
        assert np.array_equal(item.target, render(scene, size))
        assert psnr(item.input, item.target) < 40


@pytest.mark.parametrize("task, kind", ALL_KINDS)
def test_every_kind_gives_valid_exact_targets(task, kind):
    for seed in range(40):
        item = sample_task(task, seed, 64, kind=kind)
        assert item.task == task and item.edit.kind == kind
        _check_item(item, 64)
        metrics = task_metrics(item, item.target)
        assert metrics["success"] == 1 and metrics["psnr"] == PSNR_CAP and metrics["ssim"] == 1.0


@pytest.mark.parametrize("size", [128, 256])
def test_tasks_at_larger_sizes(size):
    for n, (task, kind) in enumerate(ALL_KINDS):
        item = sample_task(task, 1000 + n, size, kind=kind)
        _check_item(item, size)
        assert task_metrics(item, item.target)["success"] == 1


def test_random_kind_and_determinism():
    for task in TASKS:
        kinds = {sample_task(task, s).edit.kind for s in range(60)}
        assert kinds == set(KINDS[task])
        a, b = sample_task(task, 7), sample_task(task, 7)
        assert a.instruction == b.instruction and a.edit == b.edit and a.scene == b.scene
        assert np.array_equal(a.input, b.input) and np.array_equal(a.target, b.target)
    t1, t2 = sample_t2i(3), sample_t2i(3)
    assert t1.caption == t2.caption and np.array_equal(t1.image, t2.image)


def test_instructions_vary_and_the_right_word_matters():
    texts, distinguishing = set(), 0
    items = [sample_task("segment", s) for s in range(300)]
    for item in items:
        texts.add(item.instruction.split(" ")[0])
        ref, objects = item.edit.reference, item.scene.objects
        if sum(o.shape == ref.shape for o in objects) >= 2:
            # the shape alone is ambiguous, so the colour / size / position word decides
            assert ref.colour or ref.size or ref.position
            distinguishing += 1
    assert len(texts) >= 4
    assert distinguishing >= 0.3 * len(items)
    positions = {item.edit.reference.position for item in items} - {None}
    assert positions == {"left", "right", "top", "bottom"}


def test_references_are_unambiguous_for_every_object():
    for seed in range(200):
        scene = sample_task("edit", seed, kind="recolour").scene
        for i in range(len(scene.objects)):
            for ref in references(scene.objects, i):
                assert resolve(scene.objects, ref) == [i]


def test_validation():
    with pytest.raises(ValueError, match="unknown task 'paint'"):
        sample_task("paint", 0)
    with pytest.raises(ValueError, match="unknown kind 'blur'"):
        sample_task("enhance", 0, kind="blur")
    with pytest.raises(ValueError, match="size=8"):
        sample_task("edit", 0, 8)
    with pytest.raises(ValueError, match="mask_alpha"):
        TaskConfig(mask_alpha=1.5)
    with pytest.raises(ValueError, match="ring_radius"):
        TaskConfig(ring_radius=0.01, ring_width=0.02)
