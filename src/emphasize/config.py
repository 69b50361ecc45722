"""Frozen configuration of sampling (text-to-image and editing). Every knob has a default and a one-line comment;
validation raises `ValueError` naming the bad value and the valid range. The method configs live with their
methods (`emphasize.methods`) and are re-exported here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from emphasize.losses import AttentionLossConfig  # noqa: F401 - re-exported
from emphasize.methods.attend_excite import AttendExciteConfig
from emphasize.methods.base import load_registry, method_names
from emphasize.methods.base import method_config as _registry_config
from emphasize.methods.embed import EmbedConfig
from emphasize.methods.importance import ImportanceConfig
from emphasize.methods.plain import PlainConfig
from emphasize.methods.reweight import ReweightConfig
from emphasize.optimize import GuidanceSchedule  # noqa: F401 - re-exported
from emphasize.sampling.guidance_rules import GUIDANCE_RULES

METHODS = method_names(initial_latent=False)  # the methods that hook sampling (`generate`, `edit`)


def _check_scale(name: str, value: float, low: float = 0.0, high: float = 100.0) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name}={value} must be a finite number in [{low}, {high}]")


@dataclass(frozen=True)
class SamplingConfig:
    """Text-to-image sampling."""

    steps: int = 50  # denoising steps
    guidance_scale: float = 7.5  # classifier-free guidance scale s
    height: int | None = None  # image height in px; None: the UNet's sample_size x the VAE factor
    width: int | None = None  # image width in px; None: as height
    seed: int = 0  # seed of the initial noise (drawn on CPU, so the same on every device)
    negative_prompt: str = ""  # the unconditional branch's prompt ("" on SDXL: zero embeddings, as its pipeline)

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps={self.steps} must be in [1, 1000]")
        _check_scale("guidance_scale", self.guidance_scale)
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} must be >= 0")


@dataclass(frozen=True)
class EditSamplingConfig:
    """Instruction editing (InstructPix2Pix / InstructDiffusion)."""

    steps: int = 100  # denoising steps (both papers' default)
    guidance_rule: str = "ip2p"  # "ip2p" (InstructPix2Pix) or "instructdiffusion" (averaged-base three-way CFG)
    text_scale: float | None = None  # s_T; None: 7.5 for ip2p, 5.0 for instructdiffusion
    image_scale: float | None = None  # s_I; None: 1.5 for ip2p, 1.25 for instructdiffusion
    height: int | None = None  # working height in px; None: from the width, or the native rule (`api.working_size`)
    width: int | None = None  # working width in px; None: longer side = the model's native side, aspect kept
    restore_size: bool = True  # resize the edited image back to the input's size (InstructDiffusion does)
    seed: int = 0  # seed of the initial noise

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps={self.steps} must be in [1, 1000]")
        if self.guidance_rule not in GUIDANCE_RULES:
            raise ValueError(f"guidance_rule={self.guidance_rule!r} must be one of {', '.join(GUIDANCE_RULES)}")
        for name in ("text_scale", "image_scale"):
            if getattr(self, name) is not None:
                _check_scale(name, getattr(self, name))
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} must be >= 0")

    @property
    def scales(self) -> tuple[float, float]:
        """(s_T, s_I) with the rule's published defaults filled in."""
        defaults = {"ip2p": (7.5, 1.5), "instructdiffusion": (5.0, 1.25)}[self.guidance_rule]
        text = self.text_scale if self.text_scale is not None else defaults[0]
        image = self.image_scale if self.image_scale is not None else defaults[1]
        return text, image


MethodConfig = PlainConfig | AttendExciteConfig | ImportanceConfig | ReweightConfig | EmbedConfig
DEFAULT_CONFIGS: dict[str, type] = {name: load_registry()[name].config_class for name in METHODS}


def method_config(method: str, config: MethodConfig | None = None) -> MethodConfig:
    """Validate the name of a sampling-hook method (`METHODS`) and return its config (the default one when None)."""
    registry = load_registry()
    if method in registry and registry[method].initial_latent:
        raise ValueError(
            f"method {method!r} optimizes the initial latent: run it with emphasize.saliency_guidance.optimize"
        )
    hooks = method_names(initial_latent=False)
    if method not in hooks:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(hooks)}")
    return _registry_config(method, config)
