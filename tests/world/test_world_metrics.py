"""Metrics: identical images score perfectly, known corruptions give known values."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from emphasize.world import (
    BACKGROUND,
    PSNR_CAP,
    Detection,
    aggregate,
    blend_mask,
    draw_ring,
    find_ring,
    mask_iou,
    overlay_mask,
    parse_caption,
    psnr,
    render,
    sample_task,
    ssim,
    t2i_metrics,
    task_metrics,
)


def _det(shape, colour, size="large", x=10.0, y=10.0) -> Detection:
    bbox = (int(x) - 5, int(y) - 5, int(x) + 5, int(y) + 5)
    return Detection(shape, colour, size, bbox, (x, y), 100, 0.0, np.zeros((1, 1), dtype=bool))


def test_psnr_and_ssim_known_values():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 240, (32, 32, 3), dtype=np.uint8)
    assert psnr(a, a) == PSNR_CAP and ssim(a, a) == 1.0
    assert psnr(a, a + 5) == pytest.approx(20 * math.log10(255 / 5))
    mask = np.zeros((32, 32), dtype=bool)
    mask[:8] = True
    b = a.copy()
    b[~mask] += 10
    assert psnr(a, b, mask) == PSNR_CAP and psnr(a, b, ~mask) == pytest.approx(20 * math.log10(255 / 10))
    # constant images: only the luminance term of SSIM remains
    mu, d = 100.0, 20.0
    c1 = (0.01 * 255) ** 2
    flat = np.full((32, 32, 3), mu, dtype=np.uint8)
    assert ssim(flat, flat + np.uint8(d)) == pytest.approx((2 * mu * (mu + d) + c1) / (mu**2 + (mu + d) ** 2 + c1))
    assert ssim(a, rng.integers(0, 240, (32, 32, 3), dtype=np.uint8)) < 0.1
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(a, a[:16])


def test_mask_iou_known_values():
    a = np.zeros((10, 10), dtype=bool)
    b = np.zeros((10, 10), dtype=bool)
    assert mask_iou(a, b) == 1.0
    a[:, :6] = True
    b[:, 3:] = True
    assert mask_iou(a, b) == pytest.approx(30 / 100)
    assert mask_iou(a, ~a) == 0.0


def test_overlay_mask_reads_the_blend_back():
    item = sample_task("segment", 3)
    gt = np.any(item.input != item.target, axis=-1)
    assert np.array_equal(overlay_mask(item.target, item.input, item.edit.colour), gt)
    # the same overlay in another colour is not the requested mask
    other = "green" if item.edit.colour != "green" else "blue"
    wrong = blend_mask(item.input, gt, other, 0.5)
    assert not overlay_mask(wrong, item.input, item.edit.colour).any()


@pytest.mark.parametrize("centre", [(20.3, 30.7), (32.0, 32.0), (2.0, 40.0), (61.5, 1.5)])
def test_find_ring_centre(centre):
    img = np.full((64, 64, 3), BACKGROUND, dtype=np.uint8)
    ringed = draw_ring(img, centre, 4.5, 1.9, "red")
    found = find_ring(ringed, img, "red")
    assert math.dist(found, centre) < 0.35
    assert find_ring(img, img, "red") is None
    assert find_ring(ringed, img, "blue") is None


def test_find_ring_gives_none_for_changes_that_fit_no_ring_in_the_image():
    img = np.full((64, 64, 3), BACKGROUND, dtype=np.uint8)
    shallow = draw_ring(img, (32.0, 150.0), 120.0, 1.9, "red")  # a shallow red arc across the image
    assert find_ring(shallow, img, "red") is None  # its circle's centre lies outside the image: no ring
    arc = draw_ring(img, (32.0, 32.0), 4.5, 1.9, "red")
    arc[:, 33:] = img[:, 33:]  # half a ring still fits its circle
    assert math.dist(find_ring(arc, img, "red"), (32.0, 32.0)) < 1.0


def test_keypoint_error_is_the_ring_offset():
    item = sample_task("keypoint", 11)
    x, y = item.edit.point[0] * 64, item.edit.point[1] * 64
    ring = dict(radius=0.07 * 64, width=0.03 * 64, colour=item.edit.colour)
    shifted = draw_ring(item.input, (x + 3, y + 4), **ring)
    m = task_metrics(item, shifted)
    assert m["keypoint_found"] == 1 and m["keypoint_error"] == pytest.approx(5.0, abs=0.6)
    assert m["success"] == 0  # 5 px > 3.2 px tolerance at 64 px
    near = task_metrics(item, draw_ring(item.input, (x + 1, y), **ring))
    assert near["success"] == 1 and near["keypoint_error"] == pytest.approx(1.0, abs=0.5)
    nothing = task_metrics(item, item.input)
    assert nothing["keypoint_found"] == 0 and nothing["keypoint_error"] is None and nothing["success"] == 0


def test_segmentation_known_values():
    item = sample_task("segment", 5)
    gt = np.any(item.input != item.target, axis=-1)
    assert task_metrics(item, item.target)["mask_iou"] == 1.0
    assert task_metrics(item, item.input)["mask_iou"] == 0.0
    half = gt.copy()
    ys, _ = np.nonzero(gt)
    half[ys.min() : (ys.min() + ys.max()) // 2 + 1] = False
    partial = blend_mask(item.input, half, item.edit.colour, 0.5)
    assert task_metrics(item, partial)["mask_iou"] == pytest.approx(half.sum() / gt.sum())


@pytest.mark.parametrize("kind", ["recolour", "remove", "add", "move"])
def test_edit_success_and_preservation(kind):
    for seed in range(10):
        item = sample_task("edit", seed, kind=kind)
        perfect = task_metrics(item, item.target)
        assert perfect["success"] == 1 and perfect["preservation_psnr"] == PSNR_CAP
        assert task_metrics(item, item.input)["success"] == 0  # doing nothing is no edit
        brighter = np.clip(item.target.astype(int) + 10, 0, 255).astype(np.uint8)
        m = task_metrics(item, brighter)
        assert m["preservation_psnr"] == pytest.approx(20 * math.log10(255 / 10), abs=0.05)


def test_add_and_move_accept_other_valid_places():
    for seed in range(30):
        item = sample_task("edit", seed, kind="move")
        scene, after, t = item.scene, item.target_scene, item.edit.target
        if item.edit.direction in ("left", "right"):
            continue
        moved = after.objects[t]
        # the same move a little to the side of the exact target is still a success
        objects = list(after.objects)
        objects[t] = replace(moved, cx=moved.cx + 0.02)
        nudged = replace(after, objects=tuple(objects))
        assert task_metrics(item, render(nudged, 64))["success"] == 1
        # moving the wrong way is not
        objects[t] = scene.objects[t]
        wrong = replace(after, objects=tuple(objects))
        assert task_metrics(item, render(wrong, 64))["success"] == 0


def test_t2i_metrics_known_values():
    spec = parse_caption("a red circle and a blue square")
    both = [_det("circle", "red"), _det("square", "blue", x=40)]
    perfect = t2i_metrics(spec, both)
    assert perfect["object_recall"] == 1.0 and perfect["all_present"] == 1 and perfect["binding"] == 1.0
    assert perfect["count_correct"] == 1 and perfect["relation_correct"] is None
    missing = t2i_metrics(spec, both[:1])
    assert missing["object_recall"] == 0.5 and missing["all_present"] == 0 and missing["count_correct"] == 0
    assert missing["binding"] == 1.0  # blue never appears: not a binding failure
    extra = t2i_metrics(spec, both + [_det("star", "green")])
    assert extra["object_recall"] == 1.0 and extra["count_correct"] == 0
    assert t2i_metrics(spec, [])["object_recall"] == 0.0 and t2i_metrics(spec, [])["binding"] is None

    two = parse_caption("two red circles")
    three = [_det("circle", "red", x=x) for x in (10, 30, 50)]
    m = t2i_metrics(two, three)
    assert m["object_recall"] == 1.0 and m["count_correct"] == 0
    assert t2i_metrics(two, three[:2])["count_correct"] == 1

    rel = parse_caption("a small green triangle above a large yellow star")
    above = [_det("triangle", "green", "small", 20, 10), _det("star", "yellow", "large", 40, 50)]
    below = [_det("triangle", "green", "small", 20, 50), _det("star", "yellow", "large", 40, 10)]
    assert t2i_metrics(rel, above)["relation_correct"] == 1
    assert t2i_metrics(rel, below)["relation_correct"] == 0
    wrong_size = [_det("triangle", "green", "large", 20, 10), _det("star", "yellow", "large", 40, 50)]
    m = t2i_metrics(rel, wrong_size)
    assert m["object_recall"] == 0.5 and m["shape_recall"] == 1.0 and m["relation_correct"] == 0


def test_aggregate_skips_none():
    rows = [{"kind": "a", "success": 1, "err": None}, {"kind": "b", "success": 0, "err": 2.0}]
    out = aggregate(rows)
    assert out == {"n_items": 2, "success": 0.5, "err": 2.0, "success_a": 1.0, "success_b": 0.0}
