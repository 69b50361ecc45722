"""Where models come from: embedded world models, local diffusers directories, hub ids, single-file checkpoints."""
