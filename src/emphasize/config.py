"""Frozen configuration of sampling and of each method. Every knob has a default and a one-line comment;
validation raises `ValueError` naming the bad value and the valid range."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from emphasize.losses import AttentionLossConfig
from emphasize.optimize import GuidanceSchedule
from emphasize.sampling.guidance_rules import GUIDANCE_RULES

METHODS = ("plain", "attend-excite", "importance", "reweight", "embed")


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
    negative_prompt: str = ""  # the unconditional branch's prompt

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


@dataclass(frozen=True)
class PlainConfig:
    """No guidance: the model as it is (weighting syntax is stripped from the prompt)."""


@dataclass(frozen=True)
class AttendExciteConfig:
    """Faithful Attend-and-Excite (Chefer et al. 2023): the marked words give the subject tokens."""

    schedule: GuidanceSchedule = field(default_factory=GuidanceSchedule)  # alpha, window, refinement thresholds
    loss: AttentionLossConfig = field(default_factory=AttentionLossConfig)  # token softmax and smoothing
    attention_factor: int | None = None  # latent downsampling of the guided maps; None: model card, else the rule
    subject_tokens: str = "all"  # "all": every token of a marked phrase is a subject; "last": its last token,
    # the head noun of an English noun phrase (`(green square)` -> `square`), as A&E's users pick subject nouns

    def __post_init__(self) -> None:
        if self.subject_tokens not in ("all", "last"):
            raise ValueError(f"subject_tokens={self.subject_tokens!r} must be 'all' or 'last'")


@dataclass(frozen=True)
class ImportanceConfig:
    """DynamicImportance: weights > 1 excite a word or phrase, < 1 suppress it, 1 leaves it alone."""

    schedule: GuidanceSchedule = field(default_factory=lambda: GuidanceSchedule(thresholds=()))  # no refinement
    loss: AttentionLossConfig = field(default_factory=AttentionLossConfig)  # token softmax and smoothing
    attention_factor: int | None = None  # latent downsampling of the guided maps; None: model card, else the rule


@dataclass(frozen=True)
class ReweightConfig:
    """Prompt-to-prompt attention reweighting: post-softmax cross-attention of weighted tokens times the weight."""

    stop: float = 1.0  # reweight during the first `stop` fraction of steps (P2P's cross_replace_steps)

    def __post_init__(self) -> None:
        if not 0 <= self.stop <= 1:
            raise ValueError(f"stop={self.stop} must be a fraction in [0, 1]")


@dataclass(frozen=True)
class EmbedConfig:
    """AUTOMATIC1111 embedding weighting: z <- z * w per token, then the mean is restored."""

    mean_restore: bool = True  # rescale so the embedding's mean equals the unweighted one (A1111 "Original")


MethodConfig = PlainConfig | AttendExciteConfig | ImportanceConfig | ReweightConfig | EmbedConfig
DEFAULT_CONFIGS: dict[str, type] = {
    "plain": PlainConfig,
    "attend-excite": AttendExciteConfig,
    "importance": ImportanceConfig,
    "reweight": ReweightConfig,
    "embed": EmbedConfig,
}


def method_config(method: str, config: MethodConfig | None = None) -> MethodConfig:
    """Validate the method name and return its config (the default one when None)."""
    if method not in DEFAULT_CONFIGS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    expected = DEFAULT_CONFIGS[method]
    if config is None:
        return expected()
    if not isinstance(config, expected):
        raise ValueError(f"method {method!r} takes a {expected.__name__}, got {type(config).__name__}")
    return config
