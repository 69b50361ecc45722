"""SGOOL and DOODL: CLIP-guided optimization of the initial latent through EDICT (`emphasize.saliency_guidance`).

They are registered so that every list of methods (CLI, benchmarks, demo, app) comes from one place; they do not
hook sampling, so `emphasize.generate` refuses them and `saliency_guidance.optimize` runs them.
"""

from __future__ import annotations

from emphasize.methods.base import Method, register
from emphasize.sgool.optimizer import SGOOLConfig


@register
class SGOOL(Method):
    name = "sgool"
    config_class = SGOOLConfig
    summary = "SGOOL: CLIP loss on the image and its salient crops, optimizing the initial latent"
    tasks = ("t2i",)
    initial_latent = True


@register
class DOODL(Method):
    name = "doodl"
    config_class = SGOOLConfig
    summary = "DOODL: global CLIP loss, optimizing the initial latent"
    tasks = ("t2i",)
    initial_latent = True
