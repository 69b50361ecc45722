"""Attend-and-Excite (Chefer et al., SIGGRAPH 2023): the marked words give the subject tokens, whose most neglected
attention peak is raised by updating z_t during the first steps, with refinement at the threshold steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from emphasize.losses import AttentionLossConfig
from emphasize.methods.base import Method, MethodInputs, Plan, check_objective, guidance_plan, register
from emphasize.optimize import GuidanceSchedule


@dataclass(frozen=True)
class AttendExciteConfig:
    """Faithful Attend-and-Excite (Chefer et al. 2023): the marked words give the subject tokens."""

    schedule: GuidanceSchedule = field(default_factory=GuidanceSchedule)  # alpha, window, refinement thresholds
    loss: AttentionLossConfig = field(default_factory=AttentionLossConfig)  # token softmax and smoothing
    attention_factor: int | None = None  # latent downsampling of the guided maps; None: model card, else the rule
    subject_tokens: str = "all"  # "all": every token of a marked phrase is a subject; "last": its last token,
    # the head noun of an English noun phrase (`(green square)` -> `square`), as A&E's users pick subject nouns
    objective: str = "attend-excite"  # the attention loss (a `losses.LOSSES` name): max over subjects of 1 - peak

    def __post_init__(self) -> None:
        if self.subject_tokens not in ("all", "last"):
            raise ValueError(f"subject_tokens={self.subject_tokens!r} must be 'all' or 'last'")
        check_objective(self.objective)


@register
class AttendExcite(Method):
    name = "attend-excite"
    config_class = AttendExciteConfig
    summary = "Attend-and-Excite: raise the most neglected marked word's attention peak"
    needs_marked_words = True

    def prepare(self, config: AttendExciteConfig, inputs: MethodInputs) -> Plan:
        # each chosen token of the marked words is one subject token (weights play no part in A&E)
        chosen = [g.token_indices[-1:] if config.subject_tokens == "last" else g.token_indices for g in inputs.groups]
        subjects = [(i,) for indices in chosen for i in indices]
        return guidance_plan(config, inputs, subjects, torch.ones(len(subjects)), refine=None)
