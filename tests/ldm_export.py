"""Test helper: write a diffusers Stable Diffusion pipeline as one checkpoint in the original LDM layout.

This is the inverse of diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint` and
`convert_ldm_clip_checkpoint` (`diffusers.loaders.single_file_utils`) for UNets whose blocks have one resnet per
layer plus an optional transformer (SD 1.x topology, any depth/width), so tests can produce `.ckpt`/`.safetensors`
files shaped like Stable Diffusion, InstructPix2Pix or InstructDiffusion checkpoints from tiny random models.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."  # SDXL (generative-models): CLIP ViT-L
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."  # SDXL: OpenCLIP ViT-bigG
_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's pooled-text + size embedding (`num_classes: sequential`)
    "add_embedding.linear_2": "label_emb.0.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_FIXED = {"conv_norm_out": "norm_out"}  # encoder./decoder. conv_in, conv_out and the quant convs keep their names
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
# buffers that an LDM `LatentDiffusion` module registers (InstructDiffusion's converted checkpoints drop them)
_LDM_SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def _rename_resnet(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def unet_to_ldm(state_dict: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Rename a diffusers `UNet2DConditionModel` state dict to `openaimodel.UNetModel` keys (no prefix).

    Args:
        state_dict: the UNet's `state_dict()`.
        config: the UNet's config (`layers_per_block`, `up_block_types` are used).
    """
    per = config["layers_per_block"] + 1  # LDM input/output blocks per diffusers block (resnets + a resampler)
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        module, _, param = key.rpartition(".")
        if module in _UNET_FIXED:
            out[f"{_UNET_FIXED[module]}.{param}"] = value
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            out[f"input_blocks.{1 + b * per + j}.0.{_rename_resnet(rest, _UNET_RESNET)}"] = value
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            out[f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.1.{m[3]}"] = value
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            out[f"input_blocks.{1 + int(m[1]) * per + per - 1}.0.op.{m[2]}"] = value
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            out[f"middle_block.{2 * int(m[1])}.{_rename_resnet(m[2], _UNET_RESNET)}"] = value
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            out[f"middle_block.1.{m[1]}"] = value
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            out[f"output_blocks.{b * per + j}.0.{_rename_resnet(rest, _UNET_RESNET)}"] = value
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            out[f"output_blocks.{int(m[1]) * per + int(m[2])}.1.{m[3]}"] = value
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            b = int(m[1])
            out[f"output_blocks.{b * per + per - 1}.{2 if up_has_attn[b] else 1}.conv.{m[2]}"] = value
        else:
            raise KeyError(f"no LDM name for UNet key {key!r}")
    return out


def vae_to_ldm(state_dict: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Rename a diffusers `AutoencoderKL` state dict to LDM `AutoencoderKL` keys (no prefix).

    Args:
        state_dict: the VAE's `state_dict()`.
        config: the VAE's config (`up_block_types` is used: LDM numbers decoder levels in reverse).
    """
    n_up = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if m := re.fullmatch(r"(encoder|decoder)\.(conv_norm_out|conv_in|conv_out)\.(.+)", key):
            out[f"{m[1]}.{_VAE_FIXED.get(m[2], m[2])}.{m[3]}"] = value
        elif re.fullmatch(r"(post_)?quant_conv\.(.+)", key):
            out[key] = value
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"encoder.down.{m[1]}.block.{m[2]}.{_rename_resnet(m[3], {'conv_shortcut': 'nin_shortcut'})}"] = value
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            out[f"encoder.down.{m[1]}.downsample.conv.{m[2]}"] = value
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            level = n_up - 1 - int(m[1])
            out[f"decoder.up.{level}.block.{m[2]}.{_rename_resnet(m[3], {'conv_shortcut': 'nin_shortcut'})}"] = value
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            out[f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"] = value
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            out[f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename_resnet(m[3], {'conv_shortcut': 'nin_shortcut'})}"] = value
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            # LDM's attention projections are 1x1 convolutions: (C, C) -> (C, C, 1, 1)
            value = value[:, :, None, None] if m[3] == "weight" and value.ndim == 2 else value
            out[f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(f"no LDM name for VAE key {key!r}")
    return out


def pipeline_to_ldm(
    pipe, *, buffers: bool = True, text_model_prefix: bool = True, ema_offset: float | None = None
) -> dict[str, torch.Tensor]:
    """Flatten a diffusers SD/InstructPix2Pix pipeline into one LDM-layout state dict.

    Args:
        pipe: a pipeline with `unet`, `vae` and a CLIP `text_encoder`.
        buffers: add the buffers a real LDM checkpoint carries (noise-schedule tensors, `model_ema.num_updates`,
            CLIP `position_ids`); InstructDiffusion's released checkpoints have none.
        text_model_prefix: write the text encoder as `cond_stage_model.transformer.text_model.*` (Stable Diffusion's
            own layout) rather than `cond_stage_model.transformer.*`.
        ema_offset: also write `model_ema.*` UNet copies shifted by this value (as in non-pruned SD checkpoints).
    """
    sd: dict[str, torch.Tensor] = {}
    unet = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    sd.update({UNET_PREFIX + k: v.detach().clone() for k, v in unet.items()})
    vae = vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)
    sd.update({VAE_PREFIX + k: v.detach().clone() for k, v in vae.items()})
    clip_prefix = CLIP_PREFIX + ("text_model." if text_model_prefix else "")
    for key, value in pipe.text_encoder.state_dict().items():
        key = key.removeprefix("text_model.")
        if key.endswith("position_ids") and not buffers:
            continue
        sd[clip_prefix + key] = value.detach().clone()
    if buffers:
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        for name in _LDM_SCHEDULE_BUFFERS:
            sd[name] = (alphas_cumprod if "alphas" in name else betas).float()
        sd["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
        sd["model_ema.decay"] = torch.tensor(0.9999)
        if pipe.text_encoder.embeddings.position_ids is not None and clip_prefix + "embeddings.position_ids" not in sd:
            sd[clip_prefix + "embeddings.position_ids"] = pipe.text_encoder.embeddings.position_ids.clone()
    if ema_offset is not None:
        for key, value in unet.items():
            sd["model_ema." + "".join(("diffusion_model." + key).split("."))] = value.detach().clone() + ema_offset
    return sd


def save_checkpoint(state_dict: dict[str, torch.Tensor], path: str | Path, *, wrap: bool = True, extra=None) -> Path:
    """Write an LDM state dict as `.safetensors` (flat) or as a torch `.ckpt` (`{'state_dict': ...}` when `wrap`).

    Args:
        state_dict: LDM-layout tensors.
        path: destination; the suffix picks the format.
        wrap: for `.ckpt`, nest the tensors under `state_dict` as Lightning and InstructDiffusion do.
        extra: for `.ckpt`, more top-level entries (e.g. pickled Lightning callbacks).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        obj = {"state_dict": state_dict} if wrap else dict(state_dict)
        obj.update(extra or {})
        torch.save(obj, path)
    return path


def open_clip_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a `CLIPTextModelWithProjection` state dict to OpenCLIP's text tower keys (no prefix): the inverse of
    diffusers' `convert_open_clip_checkpoint` (q, k, v joined into `in_proj`, the projection transposed)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    fixed = {
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    for key, value in state_dict.items():
        if key.endswith("position_ids"):
            continue
        if key in fixed:
            out[fixed[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()  # (width, projection)
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            qkv.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2]] = value
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.(.+)", key):
            out[f"transformer.resblocks.{m[1]}.attn.out_proj.{m[2]}"] = value
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(layer_norm\d|mlp\.fc\d)\.(.+)", key):
            out[f"transformer.resblocks.{m[1]}.{_OPEN_CLIP_LAYER[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {key!r}")
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])  # (3 width, ...)
    return out


def sdxl_pipeline_to_ldm(pipe) -> dict[str, torch.Tensor]:
    """Flatten a diffusers SDXL pipeline into one checkpoint in the layout of `sd_xl_base_1.0.safetensors`
    (Stability's generative-models: UNet, VAE, `conditioner.embedders.0` CLIP ViT-L, `.1` OpenCLIP ViT-bigG)."""
    sd: dict[str, torch.Tensor] = {}
    unet = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    sd.update({UNET_PREFIX + k: v.detach().clone() for k, v in unet.items()})
    vae = vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)
    sd.update({VAE_PREFIX + k: v.detach().clone() for k, v in vae.items()})
    for key, value in pipe.text_encoder.state_dict().items():
        if not key.endswith("position_ids"):
            sd[SDXL_CLIP_PREFIX + "text_model." + key.removeprefix("text_model.")] = value.detach().clone()
    for key, value in open_clip_to_ldm(pipe.text_encoder_2.state_dict()).items():
        sd[SDXL_OPEN_CLIP_PREFIX + key] = value.detach().clone()
    sd[SDXL_OPEN_CLIP_PREFIX + "logit_scale"] = torch.tensor(4.6052)  # OpenCLIP's, unused for text conditioning
    return sd
