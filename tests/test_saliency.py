"""Saliency detectors: output contract, spectral residual, attention maps, TranSalNet layout/letterbox/loading,
metrics. CPU only, no downloads; TranSalNet is built once (random weights) and run once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from emphasize.saliency import (
    AttentionSaliencyDetector,
    SaliencyDetector,
    SpectralResidualConfig,
    TranSalNetDetector,
    TranSalNetRes,
    attention_saliency,
    auc_judd,
    get_detector,
    letterbox,
    letterbox_geometry,
    load_transalnet,
    nss,
    spectral_residual_saliency,
    unletterbox,
)
from emphasize.saliency.transalnet import extract_state_dict

FIXTURE = Path(__file__).parent / "data" / "transalnet_res_keys.json"


@pytest.fixture(scope="module")
def transalnet() -> TranSalNetRes:
    torch.manual_seed(0)
    return TranSalNetRes().eval()


def _blob_image(center: tuple[int, int], size: tuple[int, int] = (64, 96), radius: float = 5.0) -> torch.Tensor:
    """(1, 3, H, W): flat grey with one bright disc."""
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    disc = ((yy - center[0]) ** 2 + (xx - center[1]) ** 2) <= radius**2
    img = torch.full((1, 3, h, w), 0.3)
    img[:, :, disc] = 0.95
    return img


def _check_contract(maps: torch.Tensor, images: torch.Tensor) -> None:
    b, _, h, w = images.shape
    assert maps.shape == (b, 1, h, w)
    assert maps.dtype == images.dtype and maps.device == images.device
    assert not maps.requires_grad
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1


# ---------------------------------------------------------------------------------------------------------------
# contract


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spectral_contract(dtype: torch.dtype) -> None:
    images = torch.rand(3, 3, 40, 72, dtype=dtype, requires_grad=True)
    det = get_detector("spectral")
    assert isinstance(det, SaliencyDetector)
    _check_contract(det(images), images)


def test_attention_detector_contract_and_batch() -> None:
    images = torch.rand(2, 3, 64, 48, dtype=torch.float16)
    maps = torch.rand(8, 6, 77)  # unbatched: shared by the batch
    det = get_detector("attention", maps=maps, token_indices=[1, 2])
    out = det(images)
    _check_contract(out, images)
    assert torch.equal(out[0], out[1])
    det.update(torch.rand(2, 8, 6, 77))
    _check_contract(det(images), images)
    with pytest.raises(ValueError, match="batch 2 but images have batch 3"):
        det(torch.rand(3, 3, 64, 48))
    with pytest.raises(RuntimeError, match="no attention maps"):
        AttentionSaliencyDetector()(images)


def test_transalnet_detector_contract(transalnet: TranSalNetRes) -> None:
    images = torch.rand(1, 3, 48, 64, dtype=torch.float64)  # one 288x384 forward costs seconds on CPU
    det = TranSalNetDetector(transalnet)
    _check_contract(det(images), images)


def test_get_detector_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown saliency detector 'sobel'.*spectral"):
        get_detector("sobel")
    with pytest.raises(ValueError, match="needs a checkpoint path"):
        get_detector("transalnet")
    missing = tmp_path / "nope" / "TranSalNet_Res.pth"
    with pytest.raises(FileNotFoundError, match="TranSalNet_Res.pth"):
        get_detector(f"transalnet:{missing}")
    with pytest.raises(ValueError, match="working_size"):
        get_detector("spectral", working_size=2)
    with pytest.raises(ValueError, match="images must have shape"):
        get_detector("spectral")(torch.rand(1, 1, 8, 8))


# ---------------------------------------------------------------------------------------------------------------
# spectral residual


@pytest.mark.parametrize("center", [(15, 70), (45, 20)])
def test_spectral_peaks_on_blob(center: tuple[int, int]) -> None:
    sal = spectral_residual_saliency(_blob_image(center))[0, 0]  # (64, 96)
    peak = divmod(int(sal.argmax()), sal.shape[1])
    assert math.dist(peak, center) <= 6
    assert sal[center].item() > 0.6
    assert sal[:10, :10].mean() < 0.1 if math.dist(center, (5, 5)) > 20 else True


def test_spectral_flat_image_is_finite_and_batch_independent() -> None:
    flat = torch.full((1, 3, 32, 32), 0.5)
    blob = _blob_image((32, 48))
    out = spectral_residual_saliency(torch.cat([blob, blob]))
    assert torch.allclose(out[0], out[1])
    assert torch.allclose(out[:1], spectral_residual_saliency(blob), atol=1e-6)
    flat_out = spectral_residual_saliency(flat)
    assert torch.isfinite(flat_out).all() and flat_out.min() >= 0 and flat_out.max() <= 1
    with pytest.raises(ValueError, match="box_size"):
        SpectralResidualConfig(box_size=4)


# ---------------------------------------------------------------------------------------------------------------
# attention


def test_attention_saliency_mean_normalize_upsample() -> None:
    maps = torch.zeros(4, 6, 5)  # (h, w, T), non-square
    maps[1, 4, 2] = 1.0  # token 2 looks at (1, 4)
    maps[3, 0, 3] = 0.5  # token 3 looks at (3, 0), half as strongly
    maps[:, :, 0] = 1.0  # <sot> everywhere: ignored
    out = attention_saliency(maps, [2, 3], (8, 12))  # (1, 1, 8, 12)
    assert out.shape == (1, 1, 8, 12) and out.dtype == torch.float32
    assert out.min() == 0 and out.max() == 1
    assert divmod(int(out.argmax()), 12) in {(2, 8), (2, 9), (3, 8), (3, 9)}  # the (1, 4) cell, upsampled x2
    small = attention_saliency(maps, [2, 3], (4, 6))[0, 0]
    assert small[1, 4] == 1.0 and small[3, 0] == 0.5 and small.sum() == 1.5  # exact at native size
    big = attention_saliency(maps, [2, 3], (40, 60))[0, 0]
    assert big.max() == 1.0 and math.dist(divmod(int(big.argmax()), 60), (15, 45)) < 2
    assert attention_saliency(maps, [0], (4, 6)).abs().sum() == 0  # constant map -> zeros
    batched = attention_saliency(torch.stack([maps, maps.flip(0)]), [2], (4, 6))
    assert batched.shape == (2, 1, 4, 6) and torch.equal(batched[1, 0], batched[0, 0].flip(0))
    with pytest.raises(ValueError, match=r"token_indices \[5\] out of range"):
        attention_saliency(maps, [5], (4, 6))
    with pytest.raises(ValueError, match="at least one"):
        attention_saliency(maps, [], (4, 6))


# ---------------------------------------------------------------------------------------------------------------
# TranSalNet


def test_transalnet_state_dict_matches_published_layout(transalnet: TranSalNetRes) -> None:
    fixture = json.loads(FIXTURE.read_text())
    expected = [(k, list(s)) for k, s in fixture["keys"]]
    actual = [(k, list(v.shape)) for k, v in transalnet.state_dict().items()]
    assert len(actual) == fixture["num_keys"] == 473
    assert actual == expected  # same names, shapes and order
    n_params = sum(p.numel() for p in transalnet.parameters())
    assert n_params == fixture["num_parameters"]


def test_letterbox_geometry_square_256() -> None:
    box = letterbox_geometry((256, 256))
    assert (box.resized, box.top, box.left) == ((288, 288), 0, 48)
    images = torch.ones(1, 3, 256, 256)
    padded, box = letterbox(images)
    assert padded.shape == (1, 3, 288, 384)
    assert torch.allclose(padded[..., 48:336], torch.ones(1, 3, 288, 288))
    assert torch.all(padded[..., :48] == 1 / 255) and torch.all(padded[..., 336:] == 1 / 255)
    back = unletterbox(torch.rand(1, 1, 288, 384), (256, 256))
    assert back.shape == (1, 1, 256, 256)
    # wide and tall images: full width / full height, centred
    assert letterbox_geometry((100, 400)) == letterbox_geometry((100, 400))
    wide = letterbox_geometry((100, 400))
    assert (wide.resized, wide.top, wide.left) == ((96, 384), 96, 0)
    tall = letterbox_geometry((400, 100))
    assert (tall.resized, tall.top, tall.left) == ((288, 72), 0, 156)
    assert unletterbox(torch.rand(2, 1, 288, 384), (400, 100)).shape == (2, 1, 400, 100)


def test_unletterbox_inverts_letterbox_placement() -> None:
    # a map that is 1 exactly where the image was pasted comes back (nearly) all ones
    for size in [(256, 256), (120, 400), (300, 90)]:
        padded, _ = letterbox(torch.ones(1, 1, *size), pad_value=0.0)
        back = unletterbox(padded, size)
        assert back.shape == (1, 1, *size)
        assert back[..., 2:-2, 2:-2].min() > 0.99


def test_transalnet_save_load_round_trip(transalnet: TranSalNetRes, tmp_path: Path) -> None:
    path = tmp_path / "TranSalNet_Res.pth"
    torch.save(transalnet.state_dict(), path)
    loaded = load_transalnet(path)
    assert not loaded.training
    for (k, a), (k2, b) in zip(transalnet.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)


def test_extract_state_dict_unwraps_and_strips_prefixes() -> None:
    state = {"encoder.encoder.0.weight": torch.zeros(1), "decoder.conv1.bias": torch.ones(1)}
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    assert extract_state_dict(wrapped).keys() == state.keys()
    assert extract_state_dict({"model": state}).keys() == state.keys()


def test_load_transalnet_errors(tmp_path: Path) -> None:
    missing = tmp_path / "weights" / "TranSalNet_Res.pth"
    with pytest.raises(FileNotFoundError) as err:
        load_transalnet(missing)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)

    wrong = tmp_path / "other.pth"
    torch.save({"features.denseblock1.conv.weight": torch.zeros(2), "encoder.encoder.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError) as err:
        load_transalnet(wrong)
    msg = str(err.value)
    assert "not a TranSalNet-Res checkpoint" in msg and "DenseNet" in msg
    assert "missing keys: encoder.encoder.1.weight" in msg
    assert "unexpected keys: features.denseblock1.conv.weight" in msg
    assert "encoder.encoder.0.weight (file (3,), model (64, 3, 7, 7))" in msg

    garbage = tmp_path / "page.pth"
    garbage.write_text("<html>quota exceeded</html>")
    with pytest.raises(ValueError, match="not a readable PyTorch state dict"):
        load_transalnet(garbage)


# ---------------------------------------------------------------------------------------------------------------
# metrics


def test_nss_known_values() -> None:
    sal = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert nss(sal, mask).item() == pytest.approx(math.sqrt(3))  # (1 - 1/4) / sqrt(3/16)
    assert nss(sal, 1 - mask).item() == pytest.approx(-1 / math.sqrt(3))
    assert nss(torch.full((2, 2), 0.7), mask).item() == 0.0  # constant map
    assert nss(sal * 10 + 3, mask).item() == pytest.approx(math.sqrt(3))  # affine invariant
    batch = nss(torch.stack([sal, sal]).unsqueeze(1), torch.stack([mask, torch.zeros(2, 2)]).unsqueeze(1))
    assert batch.shape == (2,) and batch[0].item() == pytest.approx(math.sqrt(3)) and math.isnan(batch[1].item())


def test_auc_judd_known_values() -> None:
    sal = torch.tensor([[0.9, 0.8], [0.7, 0.1]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # thresholds 0.9 (tpr 1/2, fpr 0) and 0.7 (tpr 1, fpr 1/2): area 0.375 + 0.5
    assert auc_judd(sal, mask).item() == pytest.approx(0.875)
    assert auc_judd(mask, mask).item() == pytest.approx(1.0)
    assert auc_judd(torch.full((2, 2), 0.3), mask).item() == pytest.approx(0.5)  # ties grouped
    # inverted map: one threshold at 0.2 (tpr 1/2, fpr 1), then 0.1 (1, 1): Judd's AUC floors near 0.25, not 0
    assert auc_judd(torch.tensor([[0.1, 0.9], [0.2, 0.8]]), mask).item() == pytest.approx(0.25)
    ramp = torch.linspace(0, 1, 100).view(10, 10)
    assert auc_judd(ramp, (ramp > 0.5).float()).item() == pytest.approx(1.0)
    out = auc_judd(torch.stack([sal, sal]), torch.stack([mask, torch.ones(2, 2)]))
    assert out.shape == (2,) and math.isnan(out[1].item())
    with pytest.raises(ValueError, match="same shape"):
        auc_judd(sal, mask[0])
