"""Prompt-to-prompt attention reweighting (Hertz et al., ICLR 2023): the post-softmax cross-attention of weighted
tokens is multiplied by their weight during the first `stop` fraction of the steps."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from emphasize.attention.control import AttentionController
from emphasize.methods.base import Method, MethodInputs, Plan, register
from emphasize.tokens import token_weight_vector


@dataclass(frozen=True)
class ReweightConfig:
    """Prompt-to-prompt attention reweighting: post-softmax cross-attention of weighted tokens times the weight."""

    stop: float = 1.0  # reweight during the first `stop` fraction of steps (P2P's cross_replace_steps)

    def __post_init__(self) -> None:
        if not 0 <= self.stop <= 1:
            raise ValueError(f"stop={self.stop} must be a fraction in [0, 1]")


@register
class Reweight(Method):
    name = "reweight"
    config_class = ReweightConfig
    summary = "prompt-to-prompt: scale the weighted words' attention"

    def prepare(self, config: ReweightConfig, inputs: MethodInputs) -> Plan:
        if not inputs.groups:
            return Plan()
        controller = AttentionController()
        controller.token_scale = torch.tensor(token_weight_vector(inputs.groups, inputs.batch.embeds.shape[1]))
        last = round(config.stop * inputs.steps)
        rows = inputs.batch.text_rows

        def pre_step(latents, i, t):  # no latent update: only the reweighting window
            controller.scale_rows = rows if i < last else ()
            return latents

        return Plan(controller=controller, pre_step=pre_step)
