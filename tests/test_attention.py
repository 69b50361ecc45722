"""Capture processor parity, install/restore, store aggregation and attention size resolution."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from emphasize.attention import (
    AttentionCaptureProcessor,
    AttentionController,
    capture_attention,
    cross_attention_layers,
    resolve_attention_size,
)


def test_capture_processor_matches_attn_processor():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=4, dim_head=4)
    hidden = torch.randn(2, 10, 16)
    context = torch.randn(2, 7, 12)
    expected = AttnProcessor()(attn, hidden, context)
    controller = AttentionController().set_pass(rows=(1,), keep_pass=True, keep_running=True)
    got = AttentionCaptureProcessor(controller, "layer")(attn, hidden, context)
    assert torch.equal(got, expected)
    (maps,) = controller.store.pass_maps[10]
    assert maps.shape == (1, 4, 10, 7)  # (rows, heads, HW, T)
    torch.testing.assert_close(maps.sum(-1), torch.ones(1, 4, 10))


def test_capture_processor_matches_on_4d_input():
    torch.manual_seed(1)
    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)
    hidden = torch.randn(1, 8, 3, 5)  # (B, C, H, W) non-square
    context = torch.randn(1, 5, 6)
    expected = AttnProcessor()(attn, hidden, context)
    got = AttentionCaptureProcessor(AttentionController(), "x")(attn, hidden, context)
    assert torch.equal(got, expected)


def test_token_scale_rescales_only_chosen_rows():
    torch.manual_seed(2)
    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)
    hidden, context = torch.randn(2, 4, 8), torch.randn(2, 5, 6)
    scale = torch.tensor([1.0, 3.0, 1.0, 1.0, 1.0])
    plain = AttnProcessor()(attn, hidden, context)
    controller = AttentionController(token_scale=scale, scale_rows=(1,))
    got = AttentionCaptureProcessor(controller, "x")(attn, hidden, context)
    assert torch.equal(got[0], plain[0])
    assert not torch.allclose(got[1], plain[1])


def test_only_cross_attention_layers_are_replaced_and_restored(tiny_t2i):
    unet = tiny_t2i.unet
    before = dict(unet.attn_processors)
    cross = set(cross_attention_layers(unet))
    assert cross and all(name.endswith("attn2.processor") for name in cross)
    with capture_attention(unet):
        inside = unet.attn_processors
        for name, proc in inside.items():
            assert isinstance(proc, AttentionCaptureProcessor) == (name in cross)
            if name not in cross:
                assert proc is before[name]
    assert all(unet.attn_processors[k] is v for k, v in before.items())


def test_processors_restored_after_exception(tiny_t2i):
    unet = tiny_t2i.unet
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_attention(unet):
            raise RuntimeError("boom")
    assert all(unet.attn_processors[k] is v for k, v in before.items())


def test_processors_restored_after_keyboard_interrupt(tiny_t2i):
    unet = tiny_t2i.unet
    before = dict(unet.attn_processors)
    with pytest.raises(KeyboardInterrupt):
        with capture_attention(unet):
            raise KeyboardInterrupt
    assert all(unet.attn_processors[k] is v for k, v in before.items())


def test_store_aggregates_non_square_maps(tiny_t2i):
    unet = tiny_t2i.unet
    x = torch.randn(1, 4, 16, 24)  # latent 16x24 -> cross-attention at 16x24 and 8x12
    embeds = torch.randn(1, 77, 32)
    with capture_attention(unet) as controller:
        controller.set_pass(rows=(0,), keep_pass=True)
        unet(x, 10, encoder_hidden_states=embeds)
        store = controller.store
        assert store.seen_pixels() == {16 * 24, 8 * 12}
        size = resolve_attention_size(store.seen_pixels(), (16, 24), None)
        assert size == (8, 12)
        maps = store.aggregate(size)
        assert maps.shape == (1, 8, 12, 77)
        torch.testing.assert_close(maps.sum(-1), torch.ones(1, 8, 12))


def test_resolve_attention_size_errors_name_available_levels():
    with pytest.raises(ValueError, match=r"factor 4 .*available factors: 1 \(32x32\), 2 \(16x16\)"):
        resolve_attention_size({1024, 256}, (32, 32), 4)
    with pytest.raises(ValueError, match="no cross-attention layers"):
        resolve_attention_size(set(), (32, 32), None)
    assert resolve_attention_size({4096, 1024, 256, 64}, (64, 64), None) == (16, 16)  # SD 1.x at 512 px


def test_no_cross_attention_is_a_clear_error():
    from diffusers import UNet2DModel

    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        layers_per_block=1,
    )
    with pytest.raises(ValueError, match="no cross-attention layers"):
        with capture_attention(unet):
            pass


def test_stop_after_ends_the_pass_with_the_same_maps(tiny_t2i):
    from emphasize.attention.control import StopForward

    unet = tiny_t2i.unet
    x, embeds = torch.randn(1, 4, 32, 32), torch.randn(1, 77, 32)
    with capture_attention(unet) as controller:
        controller.set_pass(rows=(0,), keep_pass=True)
        unet(x, 10, encoder_hidden_states=embeds)
        full = controller.store.aggregate((16, 16))
        assert len(controller.store.pass_maps[1024]) == 3  # down 0 and up 1 (two layers) at 32x32
        controller.set_pass(rows=(0,), keep_pass=True, stop_after=(256, 1))  # the mid block is the only 16x16
        with pytest.raises(StopForward):
            unet(x, 10, encoder_hidden_states=embeds)
        assert set(controller.store.pass_maps) == {1024, 256}
        assert len(controller.store.pass_maps[1024]) == 1  # the up blocks never ran
        assert torch.equal(controller.store.aggregate((16, 16)), full)


def test_default_attention_level_rule():
    from emphasize.attention.store import default_attention_factor, downsampled_size

    def levels(latent, factors):
        return {f: downsampled_size((latent, latent), f) for f in factors}

    assert default_attention_factor(levels(64, (1, 2, 4, 8))) == 4  # SD 1.x at 512 px: A&E's 16x16
    assert default_attention_factor(levels(128, (2, 4))) == 4  # SDXL at 1024 px: 32x32
    assert default_attention_factor(levels(16, (1, 2, 4))) == 2  # the embedded world model: 8x8, not the 4x4 mid
    assert default_attention_factor(levels(4, (1, 2, 4))) == 1  # nothing 8x8 or finer: the finest


def test_the_model_card_names_the_guided_level(tmp_path, tiny_t2i):
    import json

    from emphasize.api import card_factor
    from emphasize.models.load import load_pipeline

    tiny_t2i.save_pretrained(tmp_path)
    assert card_factor(load_pipeline(str(tmp_path), "t2i")) is None
    (tmp_path / "sampling_defaults.json").write_text(json.dumps({"attention_factor": 2}))
    assert card_factor(load_pipeline(str(tmp_path), "t2i")) == 2
