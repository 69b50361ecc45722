"""Text conditioning of the model families the samplers run: Stable Diffusion 1.x/2.x and Stable Diffusion XL.

Stable Diffusion reads one CLIP text encoder's last hidden states. SDXL (Podell et al. 2023, "SDXL: Improving
Latent Diffusion Models for High-Resolution Image Synthesis") reads two: the penultimate hidden states of CLIP ViT-L
(`text_encoder`) and of OpenCLIP ViT-bigG (`text_encoder_2`) concatenated on the channel axis, plus two extra UNet
inputs through `added_cond_kwargs`: the pooled, projected text embedding of `text_encoder_2` (`text_embeds`) and
the six size-and-crop numbers (`time_ids` = original size + crop top-left + target size, "micro-conditioning").
A `TextCondition` carries what one prompt gives the UNet; `GuidedBatch` (`guidance_rules.py`) turns it into the
rows of a guided pass. Components are read from any object with diffusers' attribute names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from emphasize.sampling.common import encode_prompt

Family = Literal["sd", "sdxl"]


@dataclass(frozen=True)
class TextCondition:
    """What one batch of prompts gives the UNet."""

    embeds: torch.Tensor  # (B, L, D) hidden states the cross-attention reads (SDXL: both encoders', concatenated)
    pooled: torch.Tensor | None = None  # (B, P) SDXL: text_encoder_2's pooled projection; None for SD 1.x/2.x
    widths: tuple[int, ...] = ()  # D of each text encoder in concatenation order (sum = D); () means one encoder

    def parts(self) -> tuple[torch.Tensor, ...]:
        """The hidden states of each text encoder, `(B, L, D_k)` in concatenation order (contiguous copies, so a
        reduction over one part rounds as it does over that encoder's own output)."""
        if len(self.widths) < 2:
            return (self.embeds,)
        return tuple(part.contiguous() for part in self.embeds.split(list(self.widths), dim=-1))

    def with_parts(self, parts: tuple[torch.Tensor, ...]) -> TextCondition:
        """The same condition with each encoder's hidden states replaced (widths unchanged)."""
        return replace(self, embeds=parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))

    def to(self, dtype: torch.dtype) -> TextCondition:
        pooled = None if self.pooled is None else self.pooled.to(dtype)
        return replace(self, embeds=self.embeds.to(dtype), pooled=pooled)


def model_family(pipe) -> Family:
    """`"sdxl"` for Stable Diffusion XL components (a UNet with `addition_embed_type="text_time"` and two text
    encoders), `"sd"` for Stable Diffusion 1.x/2.x and its edit models; ValueError naming what is there otherwise.

    Args:
        pipe: a diffusers pipeline or any object with its component attributes.
    """
    embed_type = pipe.unet.config.get("addition_embed_type")
    second = getattr(pipe, "text_encoder_2", None)
    if embed_type == "text_time":
        if getattr(pipe, "text_encoder", None) is None or second is None:
            raise ValueError(
                "this SDXL UNet needs both text encoders (text_encoder and text_encoder_2); the SDXL refiner, which "
                "has only text_encoder_2, is an image-to-image model and is not supported"
            )
        if getattr(pipe, "tokenizer_2", None) is None:
            raise ValueError("an SDXL pipeline needs tokenizer_2 (the second text encoder's tokenizer)")
        return "sdxl"
    if embed_type is not None:
        raise ValueError(
            f"UNet addition_embed_type={embed_type!r} is not supported (Stable Diffusion 1.x/2.x: none, SDXL: "
            "'text_time')"
        )
    if second is not None:
        raise ValueError("the pipeline has a text_encoder_2 but its UNet takes no pooled text (not an SDXL UNet)")
    return "sd"


@torch.no_grad()
def encode_sdxl_prompt(tokenizers, text_encoders, prompts: list[str]) -> TextCondition:
    """Encode prompts as `StableDiffusionXLPipeline.encode_prompt` does (no clip skip).

    Args:
        tokenizers: `(tokenizer, tokenizer_2)`, each padding to its `model_max_length` and truncating.
        text_encoders: `(text_encoder, text_encoder_2)`: a `CLIPTextModel` and a `CLIPTextModelWithProjection`.
        prompts: plain prompt texts (no weighting syntax).
    """
    hidden, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, text_encoders, strict=True):
        ids = tokenizer(
            prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        out = encoder(ids.to(encoder.device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])  # (B, L, D_k): the penultimate layer, as SDXL was trained
        if out[0].ndim == 2:  # CLIPTextModelWithProjection's text_embeds (B, P): the pooled condition
            pooled = out[0]
    if pooled is None:
        raise ValueError("SDXL's text_encoder_2 must be a CLIPTextModelWithProjection (it gives the pooled text)")
    widths = tuple(h.shape[-1] for h in hidden)
    dtype = hidden[-1].dtype  # diffusers casts to text_encoder_2's dtype
    return TextCondition(torch.cat([h.to(dtype) for h in hidden], dim=-1), pooled.to(dtype), widths)


def encode_text(pipe, prompts: list[str], family: Family | None = None) -> TextCondition:
    """The text condition of `prompts` for the pipeline's family (`model_family`).

    Args:
        pipe: a pipeline or components object.
        prompts: plain prompt texts.
        family: the pipeline's family when already known.
    """
    family = family or model_family(pipe)
    if family == "sdxl":
        encoders = (pipe.text_encoder, pipe.text_encoder_2)
        return encode_sdxl_prompt((pipe.tokenizer, pipe.tokenizer_2), encoders, prompts)
    return TextCondition(encode_prompt(pipe.tokenizer, pipe.text_encoder, prompts))


def zeros_for_empty_prompt(pipe) -> bool:
    """SDXL's `force_zeros_for_empty_prompt` (True for SDXL base 1.0, and when the pipeline has no config): an
    empty negative prompt is all-zero embeddings, not the encoding of ''."""
    config = getattr(pipe, "config", None)
    value = config.get("force_zeros_for_empty_prompt", True) if hasattr(config, "get") else True
    return bool(value)


def negative_text(pipe, negative_prompt: str, family: Family | None = None) -> TextCondition:
    """The unconditional branch's condition, as the family's diffusers pipeline builds it by default: SD encodes
    the negative prompt (`""` included); SDXL with `force_zeros_for_empty_prompt` uses zeros for an empty one.

    Args:
        pipe: a pipeline or components object.
        negative_prompt: the negative prompt, `""` for none.
        family: the pipeline's family when already known.
    """
    family = family or model_family(pipe)
    if family == "sdxl" and not negative_prompt and zeros_for_empty_prompt(pipe):
        shape = encode_text(pipe, [""], family)  # the shapes and dtypes the encoders give
        return TextCondition(torch.zeros_like(shape.embeds), torch.zeros_like(shape.pooled), shape.widths)
    return encode_text(pipe, [negative_prompt], family)


def sdxl_time_ids(
    unet,
    pooled_dim: int,
    target_size: tuple[int, int],
    original_size: tuple[int, int] | None = None,
    crop_top_left: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """SDXL's size micro-conditioning `(1, 6)`: original size + crop top-left + target size, each `(h, w)`.

    Args:
        unet: the SDXL UNet (its config says how wide the added embedding must be).
        pooled_dim: width of the pooled text embedding (`text_encoder_2.config.projection_dim`).
        target_size: the image's `(height, width)` in pixels.
        original_size: the size conditioning; `target_size` when None (the diffusers default).
        crop_top_left: the crop conditioning; `(0, 0)` (no crop) by default.
    """
    ids = [*(original_size or target_size), *crop_top_left, *target_size]
    expected = unet.config.get("projection_class_embeddings_input_dim")
    got = unet.config.get("addition_time_embed_dim", 0) * len(ids) + pooled_dim
    if expected != got:
        raise ValueError(
            f"the UNet expects an added embedding of width {expected} (projection_class_embeddings_input_dim) but "
            f"{len(ids)} time ids x addition_time_embed_dim + the pooled width {pooled_dim} give {got}: the text "
            "encoder does not match this UNet"
        )
    return torch.tensor([ids], dtype=torch.float32)


def added_cond(text: TextCondition, time_ids: torch.Tensor | None) -> dict[str, torch.Tensor] | None:
    """The UNet's `added_cond_kwargs` rows for `text` (None for SD 1.x/2.x: no extra inputs).

    Args:
        text: the condition of B prompts.
        time_ids: `(1, 6)` or `(B, 6)` size conditioning (SDXL), broadcast over the prompts.
    """
    if text.pooled is None:
        return None
    if time_ids is None:
        raise ValueError("an SDXL condition needs its time ids (sdxl_time_ids)")
    rows = text.pooled.shape[0]
    time_ids = time_ids.to(device=text.pooled.device, dtype=text.pooled.dtype).expand(rows, -1)
    return {"text_embeds": text.pooled, "time_ids": time_ids}  # (B, P), (B, 6)
