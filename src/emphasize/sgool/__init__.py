"""SGOOL: saliency-guided optimisation of the initial latent through an exactly invertible sampler (and DOODL)."""

from emphasize.sgool.clip_loss import (
    clip_image_embeddings,
    clip_text_embedding,
    cosine_distance,
    sgool_loss,
    spherical_distance,
)
from emphasize.sgool.crops import Box, salient_boxes, salient_crops
from emphasize.sgool.optimizer import SGOOLConfig, doodl_update
from emphasize.sgool.run import SGOOLReport, SGOOLResult, optimize_initial_latent

__all__ = [
    "Box",
    "SGOOLConfig",
    "SGOOLReport",
    "SGOOLResult",
    "clip_image_embeddings",
    "clip_text_embedding",
    "cosine_distance",
    "doodl_update",
    "optimize_initial_latent",
    "salient_boxes",
    "salient_crops",
    "sgool_loss",
    "spherical_distance",
]
