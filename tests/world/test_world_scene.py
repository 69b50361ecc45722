"""Scenes and rendering: validation, determinism, layout invariants, antialiasing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emphasize.world import (
    BACKGROUND,
    COLOUR_NAMES,
    COLOURS,
    SHAPES,
    SceneConfig,
    object_masks,
    render,
    sample_scene,
    scene_from_dict,
    scene_to_dict,
    signed_distance,
)
from emphasize.world.rendering import object_coverage
from emphasize.world.scene import cell_relations, relation_holds

SEEDS = st.integers(0, 2**32 - 1)


def test_palette_is_well_separated():
    rgb = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=float)
    d = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    assert len(COLOUR_NAMES) >= 6
    assert d[~np.eye(len(rgb), dtype=bool)].min() >= 85
    assert np.linalg.norm(rgb - np.array(BACKGROUND), axis=1).min() >= 150


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_fill_their_box(shape):
    g = (np.arange(400) + 0.5) / 400 * 2.2 - 1.1
    inside = signed_distance(shape, g[None, :], g[:, None]) <= 0
    rows, cols = np.nonzero(inside)
    # the longer side spans -1..1, the box is centred
    assert g[cols].min() == pytest.approx(-1, abs=0.02) and g[cols].max() == pytest.approx(1, abs=0.02)
    assert abs(g[rows].min() + g[rows].max()) < 0.02


def test_config_validation_names_value_and_range():
    with pytest.raises(ValueError, match="grid=0"):
        SceneConfig(grid=0)
    with pytest.raises(ValueError, match="max_objects"):
        SceneConfig(max_objects=4)
    with pytest.raises(ValueError, match="large=0.5"):
        SceneConfig(large=0.5)
    with pytest.raises(ValueError, match="p_count"):
        SceneConfig(p_count=1.5)
    with pytest.raises(ValueError, match="unknown shape"):
        SceneConfig(shapes=("blob",))
    with pytest.raises(ValueError, match="size=16"):
        render(sample_scene(0), 16)
    with pytest.raises(ValueError, match="seed"):
        sample_scene(-1)
    with pytest.raises(ValueError, match="n_objects=4"):
        sample_scene(0, n_objects=4)


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS)
def test_scene_invariants(seed):
    scene = sample_scene(seed)
    assert 1 <= len(scene.objects) <= 3
    cells = {(o.row, o.col) for o in scene.objects}
    assert len(cells) == len(scene.objects)
    cfg = SceneConfig()
    for o in scene.objects:
        half = o.side / 2
        cell = 1 / scene.grid
        # inside its own cell with the margin: no overlaps between objects, nothing leaves the image
        assert (
            o.col * cell + cfg.margin - 1e-9 <= o.cx - half and o.cx + half <= (o.col + 1) * cell - cfg.margin + 1e-9
        )
        assert (
            o.row * cell + cfg.margin - 1e-9 <= o.cy - half and o.cy + half <= (o.row + 1) * cell - cfg.margin + 1e-9
        )
    if scene.relation is not None:
        a, b = scene.objects[scene.relation.subject], scene.objects[scene.relation.object]
        assert scene.relation.relation in cell_relations(a, b)
        assert relation_holds(scene.relation.relation, (a.cx, a.cy), (b.cx, b.cy))
    assert scene_from_dict(scene_to_dict(scene)) == scene


def test_sampling_is_deterministic_and_varied():
    assert sample_scene(123) == sample_scene(123)
    assert np.array_equal(render(sample_scene(123)), render(sample_scene(123)))
    scenes = [sample_scene(s) for s in range(400)]
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
    assert {o.colour for s in scenes for o in s.objects} == set(COLOUR_NAMES)
    assert {o.size for s in scenes for o in s.objects} == {"small", "large"}
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    assert {s.relation.relation for s in scenes if s.relation} == {"left of", "right of", "above", "below"}
    assert all(s.background == "plain" for s in scenes)
    textured = [sample_scene(s, config=SceneConfig(p_textured=1.0)) for s in range(5)]
    assert all(s.background == "textured" for s in textured)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_render_masks_and_antialiasing(size):
    for seed in range(20):
        scene = sample_scene(seed)
        img = render(scene, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        masks = object_masks(scene, size)
        assert masks.shape == (len(scene.objects), size, size)
        assert not np.any(masks.sum(0) > 1), "objects overlap"
        coverage = np.zeros((size, size))
        for o, m in zip(scene.objects, masks, strict=True):
            rows, cols, cov = object_coverage(o, size)
            coverage[rows, cols] += cov
            assert np.array_equal(m[rows, cols], cov >= 0.5) and m.sum() == (cov >= 0.5).sum()
            assert np.all(img[rows, cols][cov == 1] == COLOURS[o.colour])
            # the ground-truth area follows the analytic (coverage) area
            assert abs(int(m.sum()) - cov.sum()) <= 0.1 * cov.sum() + 2
        assert np.all(img[coverage == 0] == BACKGROUND)
        # antialiased: some edge pixels are strict mixtures
        edge = _near(masks.any(0)) & ~masks.any(0)
        assert np.any(np.all(img[edge] != BACKGROUND, axis=-1))


def test_textured_background_is_light():
    img = render(sample_scene(3, config=SceneConfig(p_textured=1.0)), 64).astype(int)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    assert np.abs(border - np.array(BACKGROUND)).max() <= 12
    assert border.std() > 0.5


def _near(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel (8-neighbourhood) of a mask (any leading axes are merged)."""
    from scipy import ndimage

    m = mask.any(0) if mask.ndim == 3 else mask
    return ndimage.binary_dilation(m, structure=np.ones((3, 3), dtype=bool))
