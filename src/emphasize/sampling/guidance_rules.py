"""The conditioning adapter: classifier-free guidance batches and rules (text-to-image CFG, InstructPix2Pix's and
InstructDiffusion's three-branch rules). A `GuidedBatch` says what the UNet sees in one guided pass and how its
outputs combine, and it is the one place that calls the UNet (`unet_output`, `predict`): the denoising loop, the
attention-loss pass and the EDICT chain all go through it, so classifier-free guidance is written once. Model
families with extra UNet inputs (SDXL's pooled text and size ids, `added_cond_kwargs`) carry them per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GUIDANCE_RULES = ("ip2p", "instructdiffusion")


@dataclass(frozen=True)
class GuidedBatch:
    """One classifier-free-guidance pass: R rows of text (and image) conditions and how to combine predictions."""

    embeds: torch.Tensor  # (R, 77, D) text condition of each row
    image_latents: torch.Tensor | None  # (R, 4, h, w) image condition concatenated on channels, or None (t2i)
    rule: str  # "cfg", "ip2p" or "instructdiffusion"
    text_scale: float  # s_T (the CFG scale for t2i)
    image_scale: float = 1.0  # s_I (editing only)
    cond_row: int = 0  # the row with full text (and image) condition: loss pass and attention reporting
    text_rows: tuple[int, ...] = (0,)  # rows conditioned on the (weighted) text: prompt-to-prompt reweighting
    added_cond: dict[str, torch.Tensor] | None = None  # (R, ...) extra UNet inputs of each row, passed as
    # `added_cond_kwargs` (SDXL: text_embeds (R, P), time_ids (R, 6)); None for Stable Diffusion 1.x/2.x

    def unet_input(self, scaled: torch.Tensor, rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Model input and text condition for `rows` (all rows when None) from scaled latents `(B, 4, h, w)`:
        row-major, condition r of latent b at index r * B + b, so `combine` can chunk by condition."""
        rows = rows if rows is not None else slice(None)
        embeds = self.embeds[rows]  # (R, L, D)
        r, b = embeds.shape[0], scaled.shape[0]
        x = scaled.repeat(r, 1, 1, 1) if b > 1 else scaled.expand(r, *scaled.shape[1:])  # (R*B, 4, h, w)
        if b > 1:
            embeds = embeds.repeat_interleave(b, dim=0)  # (R*B, L, D)
        if self.image_latents is not None:
            images = self.image_latents[rows].to(x)
            images = images.repeat_interleave(b, dim=0) if b > 1 else images
            x = torch.cat([x, images], dim=1)  # (R*B, 8, h, w): noisy latent + image
        return x, embeds

    def added_input(self, batch: int, rows: slice | None = None) -> dict[str, torch.Tensor] | None:
        """`added_cond_kwargs` for `rows` (all when None) and `batch` latents, in `unet_input`'s row order."""
        if self.added_cond is None:
            return None
        rows = rows if rows is not None else slice(None)
        out = {}
        for key, value in self.added_cond.items():
            value = value[rows]  # (R, ...)
            out[key] = value.repeat_interleave(batch, dim=0) if batch > 1 else value  # (R*B, ...)
        return out

    def unet_output(self, unet, scaled: torch.Tensor, t: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """The UNet's raw output `(R*B, 4, h, w)` for `rows` of the batch at timestep `t`."""
        x, embeds = self.unet_input(scaled, rows)
        if self.added_cond is None:
            return unet(x, t, encoder_hidden_states=embeds).sample
        added = self.added_input(scaled.shape[0], rows)
        return unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample

    def predict(self, unet, scaled: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The guided prediction `(B, 4, h, w)` from scaled latents `(B, 4, h, w)` at timestep `t`."""
        return self.combine(self.unet_output(unet, scaled, t))

    def conditional(self) -> GuidedBatch:
        """The single fully conditional row (the loss pass of A&E-style guidance)."""
        row = slice(self.cond_row, self.cond_row + 1)
        return GuidedBatch(
            embeds=self.embeds[row],
            image_latents=None if self.image_latents is None else self.image_latents[row],
            rule="none",
            text_scale=1.0,
            added_cond=None if self.added_cond is None else {k: v[row] for k, v in self.added_cond.items()},
        )

    def combine(self, eps: torch.Tensor) -> torch.Tensor:
        """Combine `(R*B, 4, h, w)` predictions into the guided prediction `(B, 4, h, w)`."""
        if self.rule == "none":
            return eps
        if self.rule == "cfg":  # rows: (uncond, cond)
            uncond, cond = eps.chunk(2)
            return uncond + self.text_scale * (cond - uncond)
        if self.rule == "ip2p":  # rows: (c_T c_I, 0_T c_I, 0_T 0_I); diffusers' InstructPix2Pix formula
            text, image, uncond = eps.chunk(3)
            return uncond + self.text_scale * (text - image) + self.image_scale * (image - uncond)
        if self.rule == "instructdiffusion":  # rows: (c_T c_I, 0_T c_I, c_T 0_I); edit_cli.py CFGDenoiser
            full, image_only, text_only = eps.chunk(3)
            base = 0.5 * (image_only + text_only)
            return base + self.text_scale * (full - image_only) + self.image_scale * (full - text_only)
        raise ValueError(f"unknown guidance rule {self.rule!r}")


def text_to_image_batch(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: float,
    *,
    added_cond: dict[str, torch.Tensor] | None = None,
    added_uncond: dict[str, torch.Tensor] | None = None,
) -> GuidedBatch:
    """Classifier-free guidance: rows (unconditional, conditional); `eps = e_u + s (e_c - e_u)`.

    Args:
        cond, uncond: `(1, L, D)` prompt and negative-prompt embeddings.
        guidance_scale: CFG scale s.
        added_cond, added_uncond: the extra UNet inputs of each branch (SDXL's `added_cond_kwargs`, `(1, ...)` per
            key), both or neither.
    """
    if (added_cond is None) != (added_uncond is None) or (added_cond and set(added_cond) != set(added_uncond)):
        raise ValueError("added_cond and added_uncond must be given together, with the same keys")
    added = None if added_cond is None else {k: torch.cat([added_uncond[k], v]) for k, v in added_cond.items()}
    return GuidedBatch(
        embeds=torch.cat([uncond, cond]),
        image_latents=None,
        rule="cfg",
        text_scale=guidance_scale,
        cond_row=1,
        text_rows=(1,),
        added_cond=added,
    )


def edit_batch(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    image_latents: torch.Tensor,
    rule: str,
    text_scale: float,
    image_scale: float,
) -> GuidedBatch:
    """Instruction editing with InstructPix2Pix's or InstructDiffusion's three-branch guidance.

    Args:
        cond, uncond: `(1, 77, D)` instruction and empty-prompt embeddings.
        image_latents: `(1, 4, h, w)` unscaled VAE posterior mode of the input image.
        rule: "ip2p": `e_u + s_T (e(c_T,c_I) - e(0,c_I)) + s_I (e(0,c_I) - e_u)`;
            "instructdiffusion": `0.5 (e(0,c_I) + e(c_T,0)) + s_T (e(c_T,c_I) - e(0,c_I))
            + s_I (e(c_T,c_I) - e(c_T,0))`.
        text_scale, image_scale: s_T and s_I.
    """
    if rule not in GUIDANCE_RULES:
        raise ValueError(f"unknown guidance rule {rule!r}; choose one of {', '.join(GUIDANCE_RULES)}")
    zeros = torch.zeros_like(image_latents)
    if rule == "ip2p":
        embeds, images, text_rows = (
            torch.cat([cond, uncond, uncond]),
            torch.cat([image_latents, image_latents, zeros]),
            (0,),
        )
    else:
        embeds, images, text_rows = (
            torch.cat([cond, uncond, cond]),
            torch.cat([image_latents, image_latents, zeros]),
            (0, 2),
        )
    return GuidedBatch(
        embeds=embeds,
        image_latents=images,
        rule=rule,
        text_scale=text_scale,
        image_scale=image_scale,
        cond_row=0,
        text_rows=text_rows,
    )
