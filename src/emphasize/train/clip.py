"""Train the world CLIP (`transformers.CLIPModel`, ViT on 64x64 images + CLIP text transformer) contrastively.

Each image is contrasted with the other captions of its batch and with `hard_negatives` captions of its own that
differ from the true one in a single attribute (an object's colour, shape or stated size, or the relation), so the
model learns attribute binding, which the one-attribute retrieval benchmark measures. Images use OpenAI CLIP's
normalisation (`CLIP_MEAN`, `CLIP_STD`), as `emphasize.sgool.clip_loss` feeds them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from emphasize.train.common import (
    check_config,
    images_to_tensor,
    load_checkpoint,
    train_seed,
    train_steps,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP image normalisation (as emphasize.sgool.clip_loss)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODEL_DIR = "model"  # the exported CLIPModel (+ tokenizer files) inside --out
RELATION_SWAP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@dataclass(frozen=True)
class ClipConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # images (and true captions) per step
    hard_negatives: int = 4  # one-attribute caption variants per image added as negatives
    lr: float = 1e-3  # AdamW peak learning rate (warmup, then cosine to 10%)
    warmup: int = 100  # linear warmup steps
    weight_decay: float = 0.05  # AdamW weight decay
    image_size: int = 64  # world image side in px (= the vision tower's input)
    patch_size: int = 8  # ViT patch side
    vision_width: int = 96  # vision transformer width
    vision_layers: int = 4  # vision transformer depth
    text_width: int = 64  # text transformer width (the 49408-token embedding dominates the size)
    text_layers: int = 3  # text transformer depth
    heads: int = 4  # attention heads in both towers
    projection_dim: int = 64  # joint embedding size
    checkpoint_every: int = 250  # steps between checkpoints (and at the end)
    seed: int = 0  # run seed: weights, data and negatives

    def __post_init__(self):
        check_config(
            self,
            {
                "steps": (1, 10**7),
                "batch_size": (2, 4096),
                "hard_negatives": (0, 64),
                "lr": (1e-7, 1.0),
                "image_size": (16, 1024),
                "checkpoint_every": (1, 10**7),
            },
        )


def build_clip(config: ClipConfig):
    """A fresh CLIPModel; weights drawn from `config.seed`."""
    from transformers import CLIPConfig, CLIPModel

    from emphasize.models.tokenizer import MAX_LENGTH

    clip_config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            max_position_embeddings=MAX_LENGTH,
            hidden_size=config.text_width,
            intermediate_size=4 * config.text_width,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.heads,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        vision_config=dict(
            image_size=config.image_size,
            patch_size=config.patch_size,
            hidden_size=config.vision_width,
            intermediate_size=4 * config.vision_width,
            num_hidden_layers=config.vision_layers,
            num_attention_heads=config.heads,
        ),
        projection_dim=config.projection_dim,
    )
    torch.manual_seed(config.seed)
    return CLIPModel(clip_config)


def caption_variants(spec) -> list[str]:
    """Every caption that differs from `spec`'s in exactly one attribute (sorted, without the caption itself).

    Args:
        spec: a `emphasize.world.CaptionSpec`.
    """
    from emphasize.world import COLOUR_NAMES, SHAPES, format_caption

    true = format_caption(spec)
    variants = set()
    for i, obj in enumerate(spec.objects):
        changes = [replace(obj, colour=c) for c in COLOUR_NAMES if c != obj.colour]
        changes += [replace(obj, shape=s) for s in SHAPES if s != obj.shape]
        if obj.size is not None:
            changes.append(replace(obj, size="small" if obj.size == "large" else "large"))
        for new in changes:
            objects = spec.objects[:i] + (new,) + spec.objects[i + 1 :]
            variants.add(format_caption(replace(spec, objects=objects)))
    if spec.relation is not None:
        rel = replace(spec.relation, relation=RELATION_SWAP[spec.relation.relation])
        variants.add(format_caption(replace(spec, relation=rel)))
    variants.discard(true)
    return sorted(variants)


def normalize_images(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> CLIP pixel values."""
    mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def tokenize(tokenizer, texts: list[str], device) -> torch.Tensor:
    return tokenizer(texts, padding=True, truncation=True, return_tensors="pt").input_ids.to(device)


def _features(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def clip_batch(seed: int, step: int, batch_size: int, size: int, negatives: int):
    """Step `step`'s images in [0, 1], true captions, and `negatives` one-attribute variants per image."""
    from emphasize.world import sample_t2i

    images, captions, hard = [], [], []
    for i in range(batch_size):
        s = train_seed(seed, step * batch_size + i)
        item = sample_t2i(s, size)
        images.append(item.image)
        captions.append(item.caption)
        variants = caption_variants(item.spec)
        hard.extend(random.Random(s).sample(variants, min(negatives, len(variants))))
        hard.extend(random.Random(s + 1).choices(variants, k=negatives - min(negatives, len(variants))))
    return images_to_tensor(images), captions, hard


def export_clip(model, tokenizer, out: Path) -> Path:
    """Save the CLIPModel (safetensors), the tokenizer files and a CLIP image-processor config to `out/model`."""
    import json

    target = out / MODEL_DIR
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    side = model.config.vision_config.image_size
    processor = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": side},
        "do_center_crop": True,
        "crop_size": {"height": side, "width": side},
        "do_normalize": True,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_convert_rgb": True,
        "resample": 3,
    }
    (target / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
    return target


def train_clip(
    out: str | Path,
    config: ClipConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    resume: bool = True,
    show_progress: bool = True,
    stop_at: int | None = None,
) -> Path:
    """Train the world CLIP; return the directory of the saved model (`out/model`).

    Args:
        out: run directory: `checkpoint.pt` (resumable state) and `model/` (CLIPModel + tokenizer).
        config: recipe knobs.
        device: `cpu` or `cuda`.
        resume: continue from `out/checkpoint.pt` when it exists.
        show_progress: show the tqdm bar.
        stop_at: stop (checkpoint and export) after this step, on the schedule of `config.steps` (a time-boxed
            run; resuming with a later `stop_at` continues exactly).
    """
    from emphasize.models.tokenizer import load_clip_tokenizer

    config = config or ClipConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    tokenizer = load_clip_tokenizer()
    model = build_clip(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = 0
    state = load_checkpoint(out, resume)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]

    def loss_at(step: int) -> torch.Tensor:
        # 1. data: images, their captions, and one-attribute hard negatives
        images, captions, hard = clip_batch(
            config.seed, step, config.batch_size, config.image_size, config.hard_negatives
        )
        # 2. embeddings (unit vectors) of images, true captions and negatives
        image_emb = F.normalize(
            _features(model.get_image_features(pixel_values=normalize_images(images.to(device)))), dim=-1
        )
        text_emb = F.normalize(
            _features(model.get_text_features(input_ids=tokenize(tokenizer, captions + hard, device))), dim=-1
        )
        # 3. symmetric InfoNCE; images also see the hard negatives, captions see only images
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * image_emb @ text_emb.T  # (B, B * (1 + K))
        labels = torch.arange(len(captions), device=device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, : len(captions)].T, labels)) / 2

    def export(done: int) -> None:
        export_clip(model.eval(), tokenizer, out)
        model.train()

    train_steps(
        out,
        config,
        name="clip",
        start=start,
        stop_at=stop_at,
        optimizer=optimizer,
        params=list(model.parameters()),
        loss_at=loss_at,
        state=lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict()},
        export=export,
        show_progress=show_progress,
    )
    return out / MODEL_DIR


@torch.no_grad()
def retrieval_accuracy(model, tokenizer, n: int = 200, choices: int = 10, size: int = 64) -> float:
    """Top-1 accuracy of picking an image's caption among `choices` captions that differ in one attribute
    (the true one and `choices - 1` variants), on `n` held-out world images."""
    from emphasize.train.common import eval_seeds
    from emphasize.world import sample_t2i

    device = next(model.parameters()).device
    correct = 0
    for s in eval_seeds(n):
        item = sample_t2i(s, size)
        variants = caption_variants(item.spec)
        texts = [item.caption] + random.Random(s).sample(variants, min(choices - 1, len(variants)))
        image = normalize_images(images_to_tensor([item.image]).to(device))
        image_emb = F.normalize(_features(model.get_image_features(pixel_values=image)), dim=-1)
        text_emb = F.normalize(
            _features(model.get_text_features(input_ids=tokenize(tokenizer, texts, device))), dim=-1
        )
        correct += int((image_emb @ text_emb.T).argmax().item() == 0)
    return correct / n
