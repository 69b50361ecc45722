"""Attention losses on synthetic maps: A&E against hand-computed values, the importance loss's optimum."""

import math

import pytest
import torch

from emphasize.losses import (
    AttentionLossConfig,
    ae_gaussian_kernel,
    attend_excite_loss,
    importance_loss,
    smooth_maps,
    token_softmax,
)

CFG = AttentionLossConfig()


def one_hot_maps(h: int, w: int, T: int, assign: dict[int, list[tuple[int, int]]]) -> torch.Tensor:
    """(1, h, w, T) maps where listed pixels attend fully (0.9) to one token, the rest to the last token."""
    maps = torch.zeros(1, h, w, T)
    maps[..., T - 2] = 0.9  # a filler token inside the softmax range absorbs unassigned pixels
    for token, pixels in assign.items():
        for y, x in pixels:
            maps[0, y, x, :] = 0
            maps[0, y, x, token] = 0.9
    maps[..., 0] = 0.1  # SOT, dropped by the token softmax
    return maps


def test_ae_kernel_is_the_published_one():
    k = ae_gaussian_kernel(3, 0.5)
    g = torch.tensor([math.exp(-1), 1.0, math.exp(-1)])
    g = g / g.sum()
    torch.testing.assert_close(k, g[:, None] * g[None, :])
    torch.testing.assert_close(k[1], g[1] * g, rtol=0, atol=1e-7)
    assert abs(float(g[0]) - 0.212) < 1e-3 and abs(float(g[1]) - 0.576) < 1e-3


def test_smoothing_uses_reflect_padding():
    m = torch.zeros(1, 3, 3)
    m[0, 0, 0] = 1
    s = smooth_maps(m)
    g = ae_gaussian_kernel()
    # reflect padding mirrors the corner pixel across both edges, so the corner sees the centre weight only
    torch.testing.assert_close(s[0, 0, 0], g[1, 1])


def test_token_softmax_drops_sot_and_shifts_indices():
    maps = torch.rand(2, 4, 4, 9)
    soft = token_softmax(maps, num_tokens=3, config=CFG)
    assert soft.shape == (2, 4, 4, 7)  # positions 1..7 of 9 ([1:-1])
    torch.testing.assert_close(soft[..., 0], torch.softmax(100 * maps[..., 1:-1], -1)[..., 0])
    prompt_only = token_softmax(maps, num_tokens=3, config=AttentionLossConfig(softmax_over="prompt"))
    assert prompt_only.shape == (2, 4, 4, 3)  # positions 1..3


def test_attend_excite_loss_hand_computed():
    # token 1 owns the centre pixel only; token 2 owns the whole middle row
    maps = one_hot_maps(3, 3, 6, {1: [(1, 1)], 2: [(1, 0), (1, 1), (1, 2)]})
    maps[0, 1, 1, 1] = 0.9  # the centre attends equally to tokens 1 and 2
    out = attend_excite_loss(maps, [(1,), (2,)], torch.ones(2), 4, CFG)
    g = torch.tensor([math.exp(-1), 1.0, math.exp(-1)])
    g = (g / g.sum()).tolist()
    # token 1: 0.5 at the centre after the softmax -> smoothed centre = 0.5 * g1 * g1
    peak1 = 0.5 * g[1] * g[1]
    # token 2: row (1, 0.5, 1) in the middle; at (1,0) reflect padding gives columns (0.5, 1, 0.5) around it
    row_at_centre = g[0] * 1 + g[1] * 0.5 + g[2] * 1
    row_at_edge = g[0] * 0.5 + g[1] * 1 + g[2] * 0.5
    peak2 = max(g[1] * row_at_centre, g[1] * row_at_edge)
    torch.testing.assert_close(out.peaks[0], torch.tensor([peak1, peak2]), rtol=1e-5, atol=1e-6)
    expected = max(1 - peak1, 1 - peak2)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_attend_excite_loss_is_zero_when_subject_fills_a_patch():
    maps = one_hot_maps(5, 5, 6, {1: [(y, x) for y in range(1, 4) for x in range(1, 4)]})
    out = attend_excite_loss(maps, [(1,)], torch.ones(1), 4, CFG)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)


def test_group_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="outside the text positions"):
        attend_excite_loss(torch.rand(1, 2, 2, 8), [(0,)], torch.ones(1), 3, CFG)


def test_importance_loss_optimum_and_monotonicity():
    full = [(y, x) for y in range(5) for x in range(5)]
    best = one_hot_maps(5, 5, 8, {1: full})  # excited group everywhere, suppressed group nowhere
    groups, weights = [(1,), (2, 3)], torch.tensor([2.0, 0.5])
    assert importance_loss(best, groups, weights, 5, CFG).loss.item() == pytest.approx(0.0, abs=1e-6)

    half = one_hot_maps(5, 5, 8, {1: full[:10], 2: full[10:15]})
    worse = one_hot_maps(5, 5, 8, {1: full[:5], 2: full[5:15]})
    l_half = importance_loss(half, groups, weights, 5, CFG).loss.item()
    l_worse = importance_loss(worse, groups, weights, 5, CFG).loss.item()
    assert 0 < l_half < l_worse


def test_importance_loss_ignores_weight_one_and_scales_with_weight():
    torch.manual_seed(0)
    maps = torch.rand(1, 4, 4, 10)
    other = maps.clone()
    other[..., 3] += 0.5  # only the weight-1 group's attention changes
    groups = [(1,), (3,)]
    w = torch.tensor([1.5, 1.0])
    a = importance_loss(maps, groups, w, 6, CFG).loss
    b = importance_loss(other, groups, w, 6, CFG).loss
    # the weight-1 group adds no term; it only competes in the softmax, which changes group 1's map
    single = importance_loss(maps, [(1,)], torch.tensor([1.5]), 6, CFG).loss
    torch.testing.assert_close(a, single)
    assert not torch.equal(a, b)
    twice = importance_loss(maps, [(1,)], torch.tensor([2.0]), 6, CFG).loss
    torch.testing.assert_close(twice, 2 * single)
    assert importance_loss(maps, groups, torch.ones(2), 6, CFG).loss.item() == 0.0


def test_descending_importance_loss_excites_and_suppresses():
    torch.manual_seed(0)
    logits = torch.randn(1, 6, 6, 12, requires_grad=True)
    groups, weights = [(2,), (4, 5)], torch.tensor([3.0, 0.2])
    opt = torch.optim.Adam([logits], lr=0.05)

    def state():
        maps = torch.softmax(logits, -1)
        return importance_loss(maps, groups, weights, 8, CFG)

    start = state()
    for _ in range(150):
        opt.zero_grad()
        state().loss.sum().backward()
        opt.step()
    end = state()
    assert end.loss.item() < 0.3 * start.loss.item()
    assert end.peaks[0, 0] > start.peaks[0, 0] and end.peaks[0, 0] > 0.9
    # the sharpened token softmax saturates on pixels another token owns outright, so the heavy group's share
    # grows from 0.18 to about 0.7 rather than to 1; the light group's share is drained
    assert end.masses[0, 0] > 3 * start.masses[0, 0] and end.masses[0, 1] < 0.2 * start.masses[0, 1]


def test_smoothing_maps_too_small_to_reflect():
    from emphasize.losses import smooth_maps

    one = torch.full((2, 1, 1), 0.3)
    assert torch.allclose(smooth_maps(one), one)  # a 1x1 map is its own (replicated) neighbourhood
    assert smooth_maps(torch.rand(1, 1, 5)).shape == (1, 1, 5)


def test_spatial_entropy_is_one_for_uniform_and_zero_for_one_pixel():
    from emphasize.losses import spatial_entropy

    one = torch.zeros(1, 1, 4, 4)
    one[0, 0, 2, 1] = 0.7
    values = spatial_entropy(torch.cat([torch.full((1, 1, 4, 4), 0.3), one], dim=1))
    torch.testing.assert_close(values, torch.tensor([[1.0, 0.0]]), rtol=0, atol=1e-5)
    assert spatial_entropy(torch.ones(2, 3, 1, 1)).eq(0).all()


def test_focus_term_prefers_one_object_over_two_with_the_same_peak():
    # the word owns a 3x3 object (the peak) and, in `spread`, as much again of a second object
    obj_a = [(y, x) for y in range(0, 3) for x in range(0, 3)]
    obj_b = [(y, x) for y in range(4, 7) for x in range(4, 7)]
    one = one_hot_maps(7, 7, 8, {1: obj_a})
    two = one_hot_maps(7, 7, 8, {1: obj_a + obj_b})
    groups, w = [(1,)], torch.tensor([2.0])
    focused = AttentionLossConfig(prominence=0.0, focus=1.0)
    assert importance_loss(one, groups, w, 5, focused).loss < importance_loss(two, groups, w, 5, focused).loss
    # the default loss (prominence, no focus) prefers the word on both objects: it claims more of the image
    assert importance_loss(one, groups, w, 5, CFG).loss > importance_loss(two, groups, w, 5, CFG).loss
    # light words are unaffected by focus
    light = torch.tensor([0.5])
    torch.testing.assert_close(
        importance_loss(two, groups, light, 5, focused).loss, importance_loss(two, groups, light, 5, CFG).loss
    )
    with pytest.raises(ValueError, match="focus"):
        AttentionLossConfig(focus=-1.0)
