"""CLIP losses of DOODL and SGOOL: distances between L2-normalised CLIP image and text embeddings.

- DOODL's spherical distance `d(u, v) = 2 arcsin(||u - v|| / 2)^2` (the squared great-circle distance, halved,
  between unit vectors), or the cosine distance `1 - cos(u, v)`.
- SGOOL's combination of the whole image and its salient crops: `L = d(global) + lambda * mean_k d(crop_k)`.

Images enter in [0, 1], are resized (bilinear, antialiased) to the CLIP vision model's square input and normalised
with CLIP's mean/std (the OpenAI values, which every OpenAI and LAION CLIP uses, unless given). Works with any
`transformers.CLIPModel` (transformers 4.x returns features as tensors, 5.x as a model output; both are handled).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP image normalisation (DOODL, CLIPImageProcessor)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (..., D), (..., D) -> (...)


def spherical_distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """DOODL's spherical distance `2 arcsin(||u - v|| / 2)^2` between the unit vectors along u and v (last dim)."""
    u, v = F.normalize(u, dim=-1), F.normalize(v, dim=-1)
    return (u - v).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)


def cosine_distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cosine distance `1 - cos(u, v)` along the last dim."""
    return 1 - F.cosine_similarity(u, v, dim=-1)


DISTANCES: dict[str, Distance] = {"spherical": spherical_distance, "cosine": cosine_distance}


def _features(output) -> torch.Tensor:
    """`get_*_features` output -> `(N, D)` tensor (transformers 5 wraps it in a model output)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def clip_image_size(clip_model) -> int:
    """Side of the square input of the CLIP vision model (224 for ViT-B/32 and ViT-L/14)."""
    return int(clip_model.config.vision_config.image_size)


def clip_image_embeddings(
    clip_model,
    images: torch.Tensor,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
) -> torch.Tensor:
    """Unit CLIP image embeddings of images in [0, 1], differentiably.

    Args:
        clip_model: a `transformers.CLIPModel`.
        images: `(N, 3, H, W)` in [0, 1]; resized to the model's square input size unless already that size.
        mean, std: per-channel normalisation (OpenAI CLIP's by default).

    Returns:
        `(N, D)` L2-normalised embeddings.
    """
    side = clip_image_size(clip_model)
    if images.shape[-2:] != (side, side):
        images = F.interpolate(images, size=(side, side), mode="bilinear", antialias=True)
    mean_t = images.new_tensor(mean).view(1, 3, 1, 1)
    std_t = images.new_tensor(std).view(1, 3, 1, 1)
    pixels = ((images - mean_t) / std_t).to(clip_model.dtype)
    return F.normalize(_features(clip_model.get_image_features(pixel_values=pixels)), dim=-1)


def check_prompt_fits(tokenizer, prompt: str, max_length: int | None = None) -> None:
    """Raise ValueError if `prompt` needs more than `max_length` tokens (start/end tokens included).

    Args:
        tokenizer: a CLIP tokenizer.
        prompt: the text.
        max_length: the text model's context length; `tokenizer.model_max_length` when None.
    """
    max_length = max_length or tokenizer.model_max_length
    count = len(tokenizer(prompt, truncation=False, verbose=False).input_ids)
    if count > max_length:
        raise ValueError(
            f"prompt {prompt!r} is {count} tokens long but the CLIP tokenizer encodes at most {max_length} "
            "(start and end tokens included); shorten it"
        )


@torch.no_grad()
def clip_text_embedding(clip_model, tokenizer, prompt: str) -> torch.Tensor:
    """Unit CLIP text embedding `(1, D)` of `prompt`; ValueError if the tokenizer cannot encode it fully.

    Args:
        clip_model: a `transformers.CLIPModel`.
        tokenizer: its tokenizer.
        prompt: the text.
    """
    max_length = min(tokenizer.model_max_length, clip_model.config.text_config.max_position_embeddings)
    check_prompt_fits(tokenizer, prompt, max_length)
    ids = tokenizer([prompt], padding="max_length", max_length=max_length, return_tensors="pt").input_ids
    features = _features(clip_model.get_text_features(input_ids=ids.to(clip_model.device)))
    return F.normalize(features, dim=-1)


def sgool_loss(
    global_embeddings: torch.Tensor,
    crop_embeddings: torch.Tensor | None,
    text_embedding: torch.Tensor,
    *,
    salient_weight: float = 1.0,
    distance: str = "spherical",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SGOOL's loss `L = d(global) + lambda * mean_k d(crop_k)` per image (DOODL's loss when there are no crops).

    Args:
        global_embeddings: `(B, D)` CLIP embeddings of the whole images.
        crop_embeddings: `(B, K, D)` embeddings of their salient crops, or None / K = 0 for the global loss only.
        text_embedding: `(1, D)` or `(B, D)` CLIP embedding of the prompt.
        salient_weight: lambda.
        distance: `spherical` or `cosine`.

    Returns:
        `(loss, global_distance, crop_distance)`, each `(B,)`; crop_distance is zero without crops.
    """
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of {', '.join(DISTANCES)}")
    d = DISTANCES[distance]
    global_distance = d(global_embeddings, text_embedding)  # (B,)
    if crop_embeddings is None or crop_embeddings.shape[1] == 0:
        crop_distance = torch.zeros_like(global_distance)
    else:
        crop_distance = d(crop_embeddings, text_embedding.unsqueeze(1)).mean(dim=1)  # (B, K) -> (B,)
    return global_distance + salient_weight * crop_distance, global_distance, crop_distance
