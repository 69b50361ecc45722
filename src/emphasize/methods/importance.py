"""DynamicImportance: weights > 1 excite a word or phrase, < 1 suppress it, 1 leaves it alone; z_t follows the
gradient of the weighted importance loss on the token groups' attention."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from emphasize.losses import AttentionLossConfig
from emphasize.methods.base import Method, MethodInputs, Plan, check_objective, guidance_plan, register
from emphasize.optimize import GuidanceSchedule


@dataclass(frozen=True)
class ImportanceConfig:
    """DynamicImportance: weights > 1 excite a word or phrase, < 1 suppress it, 1 leaves it alone."""

    schedule: GuidanceSchedule = field(default_factory=lambda: GuidanceSchedule(thresholds=()))  # no refinement
    loss: AttentionLossConfig = field(default_factory=AttentionLossConfig)  # token softmax and smoothing
    attention_factor: int | None = None  # latent downsampling of the guided maps; None: model card, else the rule
    objective: str = "importance"  # the attention loss (a `losses.LOSSES` name)

    def __post_init__(self) -> None:
        check_objective(self.objective)


@register
class Importance(Method):
    name = "importance"
    config_class = ImportanceConfig
    summary = "DynamicImportance: heavy words gain attention, light ones lose it"

    def prepare(self, config: ImportanceConfig, inputs: MethodInputs) -> Plan:
        groups = inputs.groups
        weights = torch.tensor([g.weight for g in groups], dtype=torch.float32)
        if not groups or not bool((weights != 1).any()):
            return Plan()  # all weights 1: exactly plain sampling
        refine = [k for k, g in enumerate(groups) if g.weight > 1]
        return guidance_plan(config, inputs, [g.token_indices for g in groups], weights, refine)
