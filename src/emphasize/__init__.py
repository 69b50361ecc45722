"""emphasize: tell a pretrained diffusion model which words and which regions of an image matter."""

__version__ = "0.1.0"
