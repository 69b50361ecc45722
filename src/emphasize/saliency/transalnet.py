"""TranSalNet-Res (Lou et al., "TranSalNet: Towards perceptually relevant visual saliency prediction",
Neurocomputing 2022; github.com/LJOVO/TranSalNet) in plain PyTorch, loading the published `TranSalNet_Res.pth`.

Architecture (module names follow the original so its state dict loads with `strict=True`):
    encoder.encoder.{0..7}   ResNet-50 children conv1, bn1, relu, maxpool, layer1..4 (see `resnet.py`);
                             layer2/3/4 feed the decoder: (512, 36, 48), (1024, 18, 24), (2048, 9, 12)
    decoder.TransEncoder1..3 1x1 conv to the hidden size + learned positional embeddings of fixed length
                             9*12, 18*24, 36*48 + 2 pre-norm ViT blocks (hidden 768/768/512, heads 12/12/8, MLP x4)
    decoder.conv1..7, batchnorm1..6
                             conv/BN/ReLU with nearest x2 upsampling; the coarser path multiplies the next
                             transformer output (multiplicative fusion); final 3x3 conv -> sigmoid
Input is therefore exactly (B, 3, 288, 384), RGB / 255 with no ImageNet normalization; output (B, 1, 288, 384).

Pre/post-processing mirrors the original `utils/data_process.py`: `preprocess_img` letterboxes into a uint8 canvas
of ones (so the border is 1/255 after the /255 scaling, i.e. near black, not white) with an aspect-preserving
cv2 bilinear resize; `postprocess_img` resizes the map so it covers the image and crops the centre.
The weights are SALICON-trained and distributed by the authors (Google Drive / BaiduYun links in their README);
their training notebook saves them with a plain `torch.save(model.state_dict())`, so keys carry no prefix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from emphasize.saliency.base import check_images
from emphasize.saliency.resnet import resnet50_stages

INPUT_SIZE = (288, 384)  # (H, W) the positional embeddings are built for
_ENCODER_TAPS = (5, 6, 7)  # indices of layer2, layer3, layer4 among the ResNet-50 children
# (in_channels, grid (h, w), hidden size, heads) of TransEncoder1..3; all have 2 layers and an MLP of 4x hidden
_TRANSFORMERS = ((2048, (9, 12), 768, 12), (1024, (18, 24), 768, 12), (512, (36, 48), 512, 8))
_TRANSFORMER_LAYERS = 2
_MLP_RATIO = 4
_DECODER_CHANNELS = (768, 768, 512, 256, 128, 64, 32, 1)  # in/out channels of conv1..conv7
WEIGHTS_URL = "https://github.com/LJOVO/TranSalNet#readme"  # where the authors link TranSalNet_Res.pth


# ---------------------------------------------------------------------------------------------------------------
# transformer encoder (ViT-style, pre-norm, as in the original utils/TransformerEncoder.py)


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape  # (B, N, C)
        q, k, v = (
            proj(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )  # (B, heads, N, C / heads)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, no dropout
        return self.out(y.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, hidden: int, mlp_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        # registration order is the original's (ffn_norm, ffn, attn, attention_norm), so key order matches too
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.ffn = _Mlp(hidden, hidden * _MLP_RATIO)
        self.attn = _SelfAttention(hidden, heads)
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class _Transformer(nn.Module):
    def __init__(self, hidden: int, heads: int, layers: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Block(hidden, heads) for _ in range(layers))
        self.encoder_norm = nn.LayerNorm(hidden, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layer:
            x = block(x)
        return self.encoder_norm(x)


class _TransEncoder(nn.Module):
    """CNN feature map -> tokens (1x1 conv) + learned positions -> transformer -> feature map of the same grid."""

    def __init__(self, in_channels: int, grid: tuple[int, int], hidden: int, heads: int) -> None:
        super().__init__()
        self.grid = grid
        self.patch_embeddings = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.position_embeddings = nn.Parameter(torch.zeros(1, grid[0] * grid[1], hidden))
        self.transformer_encoder = _Transformer(hidden, heads, _TRANSFORMER_LAYERS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape  # (B, C_in, h, w)
        if (h, w) != self.grid:
            raise ValueError(f"TranSalNet transformer expects a {self.grid} feature grid, got {(h, w)}")
        tokens = self.patch_embeddings(x).flatten(2).transpose(1, 2)  # (B, h*w, hidden)
        tokens = self.transformer_encoder(tokens + self.position_embeddings)
        return tokens.transpose(1, 2).reshape(b, -1, h, w)  # (B, hidden, h, w)


# ---------------------------------------------------------------------------------------------------------------
# the network


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # `encoder.encoder` because the original wraps the ResNet children in a ModuleList named `encoder` too
        self.encoder = nn.ModuleList(resnet50_stages())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i in _ENCODER_TAPS:
                taps.append(x)
        return taps  # [(B, 512, 36, 48), (B, 1024, 18, 24), (B, 2048, 9, 12)]


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        c = _DECODER_CHANNELS
        for i in range(7):
            setattr(self, f"conv{i + 1}", nn.Conv2d(c[i], c[i + 1], kernel_size=3, padding=1))
        for i in range(6):
            setattr(self, f"batchnorm{i + 1}", nn.BatchNorm2d(c[i + 1]))
        for i, (in_channels, grid, hidden, heads) in enumerate(_TRANSFORMERS):
            setattr(self, f"TransEncoder{i + 1}", _TransEncoder(in_channels, grid, hidden, heads))

    def _conv_bn_relu(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return F.relu(getattr(self, f"batchnorm{i}")(getattr(self, f"conv{i}")(x)))

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        c3, c4, c5 = taps
        up = self._upsample
        x = up(self._conv_bn_relu(1, self.TransEncoder1(c5)))  # (B, 768, 18, 24)
        x = up(self._conv_bn_relu(2, F.relu(x * self.TransEncoder2(c4))))  # (B, 512, 36, 48)
        x = up(self._conv_bn_relu(3, F.relu(x * self.TransEncoder3(c3))))  # (B, 256, 72, 96)
        x = up(self._conv_bn_relu(4, x))  # (B, 128, 144, 192)
        x = up(self._conv_bn_relu(5, x))  # (B, 64, 288, 384)
        x = self._conv_bn_relu(6, x)  # (B, 32, 288, 384)
        return torch.sigmoid(self.conv7(x))  # (B, 1, 288, 384)

    @staticmethod
    def _upsample(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class TranSalNetRes(nn.Module):
    """TranSalNet with the ResNet-50 encoder: (B, 3, 288, 384) RGB/255 -> (B, 1, 288, 384) saliency in [0, 1].

    Randomly initialized; use `load_transalnet(path)` for the published weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.decoder = _Decoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict saliency on the model canvas.

        Args:
            x: (B, 3, 288, 384) letterboxed RGB in [0, 1] (see `letterbox`).

        Returns:
            (B, 1, 288, 384) saliency in [0, 1].
        """
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != INPUT_SIZE:
            raise ValueError(f"TranSalNet takes (B, 3, {INPUT_SIZE[0]}, {INPUT_SIZE[1]}), got {tuple(x.shape)}")
        return self.decoder(self.encoder(x))


# ---------------------------------------------------------------------------------------------------------------
# letterboxing (the original preprocess_img / postprocess_img geometry)


@dataclass(frozen=True)
class Letterbox:
    """Where an image of `size` sits inside the model canvas: resized to `resized`, pasted at (top, left)."""

    size: tuple[int, int]  # (H, W) of the original image
    resized: tuple[int, int]  # (h, w) after the aspect-preserving resize
    top: int  # first canvas row covered by the image
    left: int  # first canvas column covered by the image


def letterbox_geometry(size: tuple[int, int], canvas: tuple[int, int] = INPUT_SIZE) -> Letterbox:
    """Integer geometry of the original `preprocess_img`: fit the long side (relative to the canvas), centre.

    Args:
        size: (H, W) of the image.
        canvas: (H, W) of the model input.
    """
    height, width = size
    rows, cols = canvas
    if height / rows > width / cols:  # relatively taller: full height, pad left/right
        new_cols = min(cols, max(1, (width * rows) // height))
        return Letterbox(size=(height, width), resized=(rows, new_cols), top=0, left=(cols - new_cols) // 2)
    new_rows = min(rows, max(1, (height * cols) // width))  # relatively wider (or same): full width, pad top/bottom
    return Letterbox(size=(height, width), resized=(new_rows, cols), top=(rows - new_rows) // 2, left=0)


def letterbox(
    images: torch.Tensor,
    canvas: tuple[int, int] = INPUT_SIZE,
    pad_value: float = 1 / 255,
    antialias: bool = False,
) -> tuple[torch.Tensor, Letterbox]:
    """Aspect-preserving resize and centred paste onto a constant canvas, as the original `preprocess_img`.

    Args:
        images: (B, C, H, W) in [0, 1].
        canvas: (H, W) of the output.
        pad_value: border value; the original's uint8 canvas of ones gives 1/255.
        antialias: antialias when shrinking; cv2's INTER_LINEAR, which the original uses, does not.

    Returns:
        (B, C, canvas H, canvas W) and the geometry needed to undo it.
    """
    box = letterbox_geometry(tuple(images.shape[-2:]), canvas)
    resized = F.interpolate(images, size=box.resized, mode="bilinear", align_corners=False, antialias=antialias)
    out = images.new_full((*images.shape[:2], *canvas), pad_value)
    h, w = box.resized
    out[..., box.top : box.top + h, box.left : box.left + w] = resized
    return out, box


def unletterbox(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Back to the image frame as the original `postprocess_img`: resize to cover (H, W), crop the centre.

    Args:
        maps: (B, C, h, w) model output on the letterbox canvas.
        size: (H, W) of the original image.

    Returns:
        (B, C, H, W).
    """
    height, width = size
    rows, cols = maps.shape[-2:]
    if height / rows > width / cols:
        new_cols = (cols * height) // rows  # >= width
        out = F.interpolate(maps, size=(height, new_cols), mode="bilinear", align_corners=False)
        left = (new_cols - width) // 2
        return out[..., :, left : left + width]
    new_rows = (rows * width) // cols  # >= height
    out = F.interpolate(maps, size=(new_rows, width), mode="bilinear", align_corners=False)
    top = (new_rows - height) // 2
    return out[..., top : top + height, :]


# ---------------------------------------------------------------------------------------------------------------
# loading the published checkpoint

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")  # common containers around a state dict
_PREFIXES = ("module.", "_orig_mod.")  # nn.DataParallel / DistributedDataParallel and torch.compile


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """The tensor state dict inside a loaded checkpoint: unwrapped from common containers, prefixes stripped.

    Args:
        obj: what `torch.load` returned: a state dict, or a dict holding one under `state_dict`, `model`, ...

    Returns:
        {key: tensor} with `module.` / `_orig_mod.` prefixes removed when every key carries them.
    """
    for _ in range(3):  # containers nest at most a couple of levels in practice
        if _is_tensor_dict(obj) or not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    changed = True
    while changed and state:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _describe(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module, name: str = "checkpoint") -> None:
    """Raise `ValueError` naming missing, unexpected and mis-shaped keys unless `state` fits `model` exactly.

    Args:
        state: candidate state dict.
        model: the module it should load into.
        name: what to call the source in the message (a path).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_describe(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_describe(unexpected)}")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches: {_describe(mismatched, 3)}")
    hint = (
        " (TranSalNet_Dense.pth is the DenseNet variant, which is not supported)"
        if any("denseblock" in k for k in unexpected)
        else ""
    )
    raise ValueError(f"{name} is not a TranSalNet-Res checkpoint{hint}: " + "; ".join(parts))


def load_transalnet(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> TranSalNetRes:
    """Build `TranSalNetRes` and load the published `TranSalNet_Res.pth` (or any state dict of it) into it.

    Args:
        path: `.pth`/`.pt` state dict (plain, wrapped under `state_dict`/`model`, or with `module.` prefixes), or a
            `.safetensors` file with the same keys. Get the file from the authors' README: see `WEIGHTS_URL`.
        device: where the model goes.
        dtype: parameter dtype.

    Returns:
        The model in eval mode.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a state dict, or its keys/shapes are not TranSalNet-Res's.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"TranSalNet checkpoint not found: {path} (get TranSalNet_Res.pth via {WEIGHTS_URL})")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: object = load_file(str(path))
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickled modules, truncated downloads, HTML error pages saved as .pth, ...
            raise ValueError(f"{path} is not a readable PyTorch state dict: {type(err).__name__}: {err}") from err
    state = extract_state_dict(raw)
    model = TranSalNetRes()
    expected = model.state_dict()
    for key, value in expected.items():  # checkpoints saved by very old torch lack BatchNorm step counters
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    check_state_dict(state, model, name=str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------------------------
# detector


@dataclass(frozen=True)
class TranSalNetConfig:
    pad_value: float = 1 / 255  # letterbox border; the original pads a uint8 canvas of ones, i.e. 1/255 after /255
    channel_order: str = "rgb"  # "rgb" as in training (PIL); "bgr" reproduces the testing notebook's cv2.imread
    antialias: bool = False  # antialias the letterbox resize; the original cv2 INTER_LINEAR resize does not
    batch_size: int = 8  # images per forward pass

    def __post_init__(self) -> None:
        if not 0.0 <= self.pad_value <= 1.0:
            raise ValueError(f"pad_value must be in [0, 1], got {self.pad_value}")
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


class TranSalNetDetector:
    """Saliency detector (the `SaliencyDetector` contract) running TranSalNet-Res with the original letterboxing."""

    def __init__(self, model: TranSalNetRes, config: TranSalNetConfig | None = None) -> None:
        """Wrap a model (put in eval mode).

        Args:
            model: e.g. `load_transalnet(path)`.
            config: see `TranSalNetConfig`.
        """
        self.model = model.eval()
        self.config = config or TranSalNetConfig()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Saliency maps at image size.

        Args:
            images: (B, 3, H, W) RGB in [0, 1], any size (letterboxed to 288x384 and mapped back).

        Returns:
            (B, 1, H, W) in [0, 1], dtype and device of `images`.
        """
        check_images(images)
        param = next(self.model.parameters())
        x = images.detach().to(device=param.device, dtype=param.dtype)
        if self.config.channel_order == "bgr":
            x = x.flip(1)
        x, box = letterbox(x, INPUT_SIZE, self.config.pad_value, self.config.antialias)  # (B, 3, 288, 384)
        out = torch.cat([self.model(chunk) for chunk in x.split(self.config.batch_size)])  # (B, 1, 288, 384)
        out = unletterbox(out.float(), box.size).clamp(0.0, 1.0)  # (B, 1, H, W)
        return out.to(device=images.device, dtype=images.dtype)

    def __repr__(self) -> str:
        return f"TranSalNetDetector({self.config})"
