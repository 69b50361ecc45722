"""Shared fixtures: tiny random-weight pipelines built from configs (real CLIP BPE tokenizer, nothing downloaded)."""

from __future__ import annotations

import os
import types

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# tiny models are dominated by per-op overhead: one thread is as fast and does not fight other processes for cores
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_t2i():
    """Tiny `StableDiffusionPipeline` (4-channel UNet, DDIM), 64x64 images, 32x32 latents."""
    from emphasize.models.tiny import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture(scope="session")
def tiny_edit():
    """Tiny `StableDiffusionInstructPix2PixPipeline` (8-channel UNet, DDIM)."""
    from emphasize.models.tiny import TinyConfig, tiny_pipeline

    return tiny_pipeline(TinyConfig(in_channels=8, seed=1))


def with_scheduler(pipe, name: str):
    """The same components with another scheduler (the shared fixture is left untouched)."""
    from emphasize.sampling.schedulers import make_scheduler

    parts = {k: getattr(pipe, k) for k in ("unet", "vae", "text_encoder", "tokenizer")}
    return types.SimpleNamespace(**parts, scheduler=make_scheduler(name, base_config=pipe.scheduler.config))
