"""Recipes that train the embedded world models from scratch: VAE, text-to-image, instruction editing, world CLIP.

Every recipe is deterministic for a seed (step k's data, noise and timesteps derive from (seed, k)), runs on CPU or
CUDA, shows a tqdm bar, and writes atomic checkpoints that a killed run resumes from. Entry points:
`train_vae`, `train_t2i`, `train_edit`, `train_clip` (and `python -m emphasize.train.cli`).
"""
