"""One entry point for where models come from: embedded world models, local directories, hub ids, checkpoint files.

`load_pipeline(model, kind)` returns a diffusers `StableDiffusionPipeline` or `StableDiffusionXLPipeline`
(`kind="t2i"`, 4-channel UNet) or `StableDiffusionInstructPix2PixPipeline` (`kind="edit"`, 8-channel UNet:
InstructPix2Pix and InstructDiffusion) from any of:

- `None`: the embedded default world model shipped in the package (`EMBEDDED_DIR / kind`);
- a local diffusers directory (`model_index.json`, `unet/`, `vae/`, ...; SDXL's also `text_encoder_2/`,
  `tokenizer_2/`), with standard or `fp16`-variant weight files;
- a hub id such as `runwayml/stable-diffusion-v1-5` or `stabilityai/stable-diffusion-xl-base-1.0`, read from the
  local Hugging Face cache only;
- one `.safetensors`/`.ckpt` file in the original LDM layout (Stable Diffusion 1.x, InstructPix2Pix,
  InstructDiffusion's `{'state_dict': ...}`, SDXL base's `sd_xl_base_1.0.safetensors` layout with its
  `conditioner.embedders`), built with diffusers' single-file loaders on the SD 1.5 or SDXL base component configs
  shipped in `CONFIGS_DIR` (or on `config=` for other architectures), so nothing is fetched from the hub.

Nothing here touches the network. User mistakes (a missing file, a model of the wrong kind, a corrupt checkpoint,
a hub id that is not cached) raise `ModelLoadError` with one line that names the path and what is wrong.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Literal, NamedTuple

import torch

PACKAGE_DIR = Path(__file__).resolve().parent
EMBEDDED_DIR = PACKAGE_DIR / "embedded"  # embedded world models: `t2i/`, `edit/` (diffusers dirs) and `clip/`
CONFIGS_DIR = PACKAGE_DIR / "configs"  # SD 1.5-layout component configs for single-file checkpoints
SINGLE_FILE_CONFIGS = {"t2i": CONFIGS_DIR / "sd15", "edit": CONFIGS_DIR / "sd15-edit"}
SDXL_CONFIGS = CONFIGS_DIR / "sdxl"  # SDXL base 1.0's component configs (stabilityai/stable-diffusion-xl-base-1.0)
SAMPLING_DEFAULTS_FILE = "sampling_defaults.json"  # the model card tools read: steps, CFG scale, ...
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
KINDS = {"t2i": 4, "edit": 8}  # pipeline kind -> UNet input channels (latent, or latent + image latent)
KIND_NAMES = {"t2i": "text-to-image", "edit": "instruction-editing"}
UNET_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"  # LDM conv_in: its shape[1] is the input channels
LDM_CLIP_PREFIX = "cond_stage_model.transformer."
SGM_CLIP_PREFIX = "conditioner.embedders.0.transformer."  # SDXL checkpoints (generative-models): CLIP ViT-L
SGM_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."  # SDXL checkpoints: OpenCLIP ViT-bigG (text_encoder_2)
LDM_COMPONENTS = {  # component -> key prefixes of the original LDM layout (those diffusers' converters read)
    "the VAE": ("first_stage_model.", "vae."),
    "the text encoder": ("cond_stage_model.",),
}
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # org/name, as the Hugging Face hub spells repo ids
PIPELINE_WEIGHTS = {  # component -> weight file stems diffusers/transformers look for
    "unet": ("diffusion_pytorch_model",),
    "vae": ("diffusion_pytorch_model",),
    "text_encoder": ("model", "pytorch_model"),
}
SDXL_WEIGHTS = {**PIPELINE_WEIGHTS, "text_encoder_2": ("model", "pytorch_model")}  # SDXL's weighted components
WEIGHT_VARIANT = "fp16"  # the weight-file variant read when a directory has no standard files (`*.fp16.safetensors`)

Kind = Literal["t2i", "edit"]


class ModelLoadError(ValueError):
    """A model could not be loaded because of the user's input (path, kind, files); the message is one line."""


class LoadedClip(NamedTuple):
    model: object  # transformers.CLIPModel
    tokenizer: object  # transformers.CLIPTokenizer


# ----------------------------------------------------------------------------------------------------------------
# public entry points


def load_pipeline(
    model: str | os.PathLike | None,
    kind: Kind,
    *,
    scheduler: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    config: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """Load a Stable Diffusion (`t2i`) or instruction-editing (`edit`) pipeline from wherever it lives, offline.

    Args:
        model: `None` for the embedded world model, a local diffusers directory, a hub id in the local Hugging Face
            cache (`runwayml/stable-diffusion-v1-5`, `timbrooks/instruct-pix2pix`), or a `.safetensors`/`.ckpt`
            file in the original LDM layout.
        kind: `t2i` (4-channel UNet, `StableDiffusionPipeline`) or `edit` (8-channel UNet,
            `StableDiffusionInstructPix2PixPipeline`); a model of the other kind is an error.
        scheduler: replace the model's scheduler by one of `emphasize.sampling.schedulers.SCHEDULERS`, keeping the
            model's noise schedule.
        dtype: weights dtype.
        device: where the pipeline is moved.
        config: single-file checkpoints only: a diffusers directory whose component configs describe the
            checkpoint's architecture; the shipped SD 1.5 configs (`SINGLE_FILE_CONFIGS`) when None.
        cache_dir: the Hugging Face hub cache to read hub ids from; the standard one (`HF_HUB_CACHE`, `HF_HOME`)
            when None.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if model is None:
        path, source = _embedded(EMBEDDED_DIR / kind, f"embedded {KIND_NAMES[kind]} model"), "embedded"
    else:
        path, source = _resolve(model, cache_dir)
    if config is not None and source != "file":
        raise ValueError(f"config= only applies to single-file checkpoints, not to {model}")
    if source == "file":
        pipe = _load_single_file(path, kind, dtype, Path(config).expanduser() if config else None)
    else:
        pipeline_geometry(path, kind)  # an unsupported layout is refused here, with its name, before loading
        pipe = _load_diffusers_dir(path, kind, dtype, label=str(model) if source == "hub" else None)
    if scheduler is not None:
        from emphasize.sampling.schedulers import make_scheduler

        pipe.scheduler = make_scheduler(scheduler, base_config=pipe.scheduler.config)
    return pipe if pipe.device == torch.device(device) else pipe.to(device)


def load_clip(
    model: str | os.PathLike | None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> LoadedClip:
    """Load a CLIP model (`transformers.CLIPModel`) and its tokenizer, offline.

    Args:
        model: `None` for the embedded world CLIP, a local directory (`config.json` + weights, as written by
            `CLIPModel.save_pretrained`), or a hub id in the local Hugging Face cache
            (`openai/clip-vit-large-patch14`).
        dtype: weights dtype.
        device: where the model is moved.
        cache_dir: the Hugging Face hub cache to read hub ids from; the standard one when None.
    """
    if model is None:
        path, source = _embedded(EMBEDDED_DIR / "clip", "embedded world CLIP", "config.json"), "embedded"
    else:
        path, source = _resolve(model, cache_dir)
    if source == "file":
        raise ModelLoadError(f"{path}: a CLIP model must be a directory (config.json + weights), not a single file")
    label = str(model) if source == "hub" else str(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{label}: not a CLIP model directory (no config.json)")
    if not _has_weights(path, ("model", "pytorch_model")):
        raise ModelLoadError(f"{label}: no weights (model.safetensors or pytorch_model.bin)")
    from transformers import CLIPModel, CLIPTokenizer

    try:
        clip = CLIPModel.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # a corrupt or mismatched file from the user: report it on one line
        raise ModelLoadError(f"{label}: cannot load the CLIP model ({_one_line(e)})") from e
    if (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file():
        tokenizer = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
    elif clip.config.text_config.vocab_size == 49408:  # OpenAI CLIP's BPE vocabulary: the copy shipped with us
        from emphasize.models.tokenizer import load_clip_tokenizer

        tokenizer = load_clip_tokenizer(clip.config.text_config.max_position_embeddings)
    else:
        raise ModelLoadError(f"{label}: no tokenizer files (vocab.json + merges.txt, or tokenizer.json)")
    return LoadedClip(clip.to(device=device, dtype=dtype).eval(), tokenizer)


def sampling_defaults(model: str | os.PathLike | None, kind: Kind) -> dict:
    """The sampling defaults recorded with a model (`sampling_defaults.json`: steps, CFG scale, ...), or {}.

    Args:
        model: None for the embedded model of `kind`, or a local directory; anything else (a hub id, a
            single-file checkpoint) has no recorded defaults.
        kind: "t2i" or "edit".
    """
    folder = EMBEDDED_DIR / kind if model is None else Path(model)
    path = folder / SAMPLING_DEFAULTS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if folder.is_dir() and path.is_file() else {}


SUPPORTED_PIPELINES = {
    "t2i": ("StableDiffusionPipeline", "StableDiffusionXLPipeline"),
    "edit": ("StableDiffusionInstructPix2PixPipeline",),
}
FAMILY_CLASSES = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}  # t2i pipeline per family


def directory_family(index: dict, kind: Kind, label: str) -> str:
    """`"sd"` (Stable Diffusion 1.x/2.x layout) or `"sdxl"` from a `model_index.json`; ModelLoadError naming the
    pipeline class and its components for any other layout, or for SDXL as an edit model.

    Args:
        index: the parsed `model_index.json`.
        kind: "t2i" or "edit".
        label: the model, for messages.
    """
    present = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v and v[0]}
    if {"unet", "text_encoder", "text_encoder_2"} <= present and kind == "t2i":
        return "sdxl"
    if {"unet", "text_encoder"} <= present and "text_encoder_2" not in present:
        return "sd"
    family = index.get("_class_name", "pipeline")
    components = ", ".join(sorted(k for k in index if not k.startswith("_")))
    layouts = {
        "t2i": "Stable Diffusion 1.x/2.x (StableDiffusionPipeline: text_encoder, unet) and SDXL base "
        "(StableDiffusionXLPipeline: text_encoder, text_encoder_2, unet)",
        "edit": "Stable Diffusion 1.x/2.x layouts (StableDiffusionInstructPix2PixPipeline: one text_encoder, a unet)",
    }[kind]
    raise ModelLoadError(
        f"{label}: a {family} directory (components {components}); {KIND_NAMES[kind]} supports {layouts}"
    )


def pipeline_geometry(model: str | os.PathLike | None, kind: Kind) -> dict | None:
    """What can be known of a diffusers directory from its config files alone, before any weights load.

    Returns `{"multiple": image sizes must be multiples of this, "native": the UNet's native image side}` for the
    embedded models and local diffusers directories, None for anything else (hub ids, single files: checked once
    loaded). Raises ModelLoadError for a directory of a pipeline family this kind does not support (the SDXL
    refiner, SD 3, SDXL for editing, ...).

    Args:
        model: as for `load_pipeline`.
        kind: "t2i" or "edit".
    """
    folder = EMBEDDED_DIR / kind if model is None else Path(model).expanduser()
    if not (folder / "model_index.json").is_file():
        return None
    label = "the embedded model" if model is None else str(model)
    index = _read_json(folder / "model_index.json", label)
    directory_family(index, kind, label)
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
        vae_factor = 2 ** (len(vae["block_out_channels"]) - 1)
        multiple = vae_factor * 2 ** (len(unet["block_out_channels"]) - 1)
        native = int(unet["sample_size"]) * vae_factor
    except (OSError, ValueError, KeyError, TypeError):
        return None  # incomplete configs are reported by load_pipeline with the file that is wrong
    return {"multiple": multiple, "native": native}


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (`HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`)."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(os.path.expandvars(env)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


# ----------------------------------------------------------------------------------------------------------------
# where is the model


def _embedded(path: Path, what: str, marker: str = "model_index.json") -> Path:
    if not (path / marker).is_file():
        raise ModelLoadError(
            f"the {what} is not installed (expected {path}); pass --model with a local model directory, "
            "a cached hub id or a checkpoint file"
        )
    return path


def _looks_like_hub_id(name: str) -> bool:
    return bool(HUB_ID.fullmatch(name)) and not name.lower().endswith(CHECKPOINT_SUFFIXES)


def _resolve(model: str | os.PathLike, cache_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """Return (path, source) with source in `dir`, `file`, `hub`; raise ModelLoadError when nothing is there."""
    name = os.fspath(model)
    path = Path(name).expanduser()
    if path.is_dir():
        return path, "dir"
    if path.is_file():
        return path, "file"
    if isinstance(model, str) and _looks_like_hub_id(name):
        return _cached_snapshot(name, Path(cache_dir).expanduser() if cache_dir else hub_cache_dir()), "hub"
    hint = "" if "/" in name or "\\" in name else " (and not a hub id, which looks like org/name)"
    raise ModelLoadError(f"{name}: no such file or directory{hint}")


def _cached_snapshot(repo_id: str, cache_dir: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=str(cache_dir), local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError and friends: the repo is simply not cached here
        raise ModelLoadError(
            f"{repo_id} is not in the local Hugging Face cache ({cache_dir}) and nothing is downloaded; on a "
            f"machine with internet run `hf download {repo_id}` (older huggingface_hub: `huggingface-cli download "
            f"{repo_id}`) and copy the cache, or pass a local directory or checkpoint file"
        ) from e


# ----------------------------------------------------------------------------------------------------------------
# diffusers directories (local, cached hub snapshots, embedded)


def _pipeline_class(kind: Kind, family: str = "sd"):
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    if family == "sdxl":
        return StableDiffusionXLPipeline
    return StableDiffusionPipeline if kind == "t2i" else StableDiffusionInstructPix2PixPipeline


def _read_json(path: Path, label: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{label}: cannot read {path.name} ({_one_line(e)})") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"{label}: {path.name} is not a JSON object")
    return data


def _has_weights(folder: Path, stems: tuple[str, ...], variant: str | None = None) -> bool:
    suffixes = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
    infix = f".{variant}" if variant else ""
    return any((folder / f"{stem}{infix}{suffix}").is_file() for stem in stems for suffix in suffixes)


def _check_kind(in_channels: int, kind: Kind, label: str) -> None:
    if in_channels == KINDS[kind]:
        return
    other = {v: k for k, v in KINDS.items()}.get(in_channels)
    what = {"t2i": "a text-to-image model", "edit": "an instruction-editing model"}.get(other, "an unsupported model")
    raise ModelLoadError(
        f"{label}: the UNet has {in_channels} input channels ({what}); kind {kind!r} needs {KINDS[kind]} "
        f"({KIND_NAMES[kind]})"
    )


def _load_diffusers_dir(path: Path, kind: Kind, dtype: torch.dtype, label: str | None = None):
    label = label or str(path)
    index_file = path / "model_index.json"
    if not index_file.is_file():
        found = sorted(p.name for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
        hint = f"; for a single checkpoint pass the file itself ({path / found[0]})" if found else ""
        raise ModelLoadError(f"{label}: not a diffusers model directory (no model_index.json){hint}")
    index = _read_json(index_file, label)
    family = directory_family(index, kind, label)
    if family == "sdxl":  # name the layout in every message about its files
        label = f"{label} ({FAMILY_CLASSES[family]})"
    weights = SDXL_WEIGHTS if family == "sdxl" else PIPELINE_WEIGHTS
    standard, variant = [], []  # components with standard weight files, with fp16-variant files
    for component, stems in weights.items():
        folder = path / component
        if not folder.is_dir():
            raise ModelLoadError(f"{label}: missing the {component}/ folder")
        if _has_weights(folder, stems):
            standard.append(component)
        if _has_weights(folder, stems, WEIGHT_VARIANT):
            variant.append(component)
        if component not in standard and component not in variant:
            raise ModelLoadError(f"{label}: {component}/ has no weights ({stems[0]}.safetensors or .bin)")
    # standard files when every component has them, else the fp16 variant (a download of `*.fp16.*` files only)
    use_variant = len(standard) < len(weights)
    if use_variant and len(variant) < len(weights):
        plain_only = next(c for c in weights if c not in variant)
        raise ModelLoadError(
            f"{label}: mixed weight files: {next(c for c in weights if c not in standard)}/ has only {WEIGHT_VARIANT} "
            f"weights and {plain_only}/ only standard ones; download one set for every component"
        )
    tokenizers = ("tokenizer", "tokenizer_2") if family == "sdxl" else ("tokenizer",)
    for component in (*tokenizers, "scheduler"):
        if not (path / component).is_dir():
            raise ModelLoadError(f"{label}: missing the {component}/ folder")
    unet_config = _read_json(path / "unet" / "config.json", label) if (path / "unet" / "config.json").is_file() else {}
    _check_kind(int(unet_config.get("in_channels", 4)), kind, label)
    # optional components named in model_index.json but absent on disk are left out rather than failing
    absent = {
        k: None
        for k, v in index.items()
        if k in ("feature_extractor", "image_encoder") and isinstance(v, list) and v[0] and not (path / k).is_dir()
    }
    extra = {} if family == "sdxl" else dict(safety_checker=None, requires_safety_checker=False)  # SDXL has none
    if use_variant:
        extra["variant"] = WEIGHT_VARIANT
    try:
        return _pipeline_class(kind, family).from_pretrained(
            str(path), local_files_only=True, **extra, **_dtype_kwarg(dtype), **absent
        )
    except Exception as e:  # corrupt weights, incompatible configs: report the user's files, on one line
        raise ModelLoadError(f"{label}: cannot load the pipeline ({_one_line(e)})") from e


# ----------------------------------------------------------------------------------------------------------------
# single-file LDM checkpoints


class _Opaque:
    """Stand-in for a pickled non-tensor object (Lightning callbacks, optimizer state): built inertly, never used."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read an LDM checkpoint's tensors without executing pickled code; unwrap nested `state_dict`s."""
    with path.open("rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise ModelLoadError(f"{path}: is a git-lfs pointer, not the weights (run `git lfs pull`)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = _torch_load_weights_only(path)
    except Exception as e:  # any failure to parse the user's file is "corrupt or not a checkpoint"
        reason = _one_line(e)
        if "weights only load failed" in reason.lower() or "weights_only" in reason:
            # torch's message advises weights_only=False, i.e. running the file's pickled code: never repeat that
            reason = (
                "torch's weights-only reader refused it: not a plain tensor checkpoint, and emphasize never runs "
                "a checkpoint's pickled code"
            )
        raise ModelLoadError(f"{path}: cannot read the checkpoint, corrupt or not a model file ({reason})") from e
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: the checkpoint holds a {type(obj).__name__}, not a state dict")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _torch_load_weights_only(path: Path):
    """`torch.load(weights_only=True)`; pickled foreign objects (e.g. Lightning's `ModelCheckpoint` in Stable
    Diffusion's `.ckpt`) are allowed only as inert `_Opaque` stand-ins, so no code from the file runs."""
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as first:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:
            raise first from None
        if not unsafe:
            raise
        with torch.serialization.safe_globals([(_Opaque, name) for name in unsafe]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _normalize_clip_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Put CLIP text weights under `cond_stage_model.transformer.text_model.*` (SDXL's ViT-L under
    `conditioner.embedders.0.transformer.text_model.*`), the layouts diffusers detects."""
    out = {}
    for key, value in sd.items():
        for prefix in (LDM_CLIP_PREFIX, SGM_CLIP_PREFIX):
            if key.startswith(prefix) and not key.startswith(prefix + "text_model."):
                key = prefix + "text_model." + key[len(prefix) :]
        out[key] = value
    return out


def _missing_weights(model) -> list[str]:
    """Parameters/buffers the checkpoint did not fill (left on the meta device by the low-memory loaders)."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return [name for name, t in tensors if t.device.type == "meta"]


def _check_component(model, component: str, label: str):
    missing = _missing_weights(model)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ModelLoadError(f"{label}: the checkpoint has no weights for {component} {missing[0]}{more}")
    return model


def _diagnose(component: str, sd: dict[str, torch.Tensor], config_dir: Path) -> str | None:
    """Why the UNet/VAE of `sd` does not load on `config_dir`: missing weights or a first mismatching shape (run
    on the error path only; convert the LDM keys as diffusers does and compare with the config's model on meta)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    cls, convert, subfolder = {
        "the UNet": (UNet2DConditionModel, convert_ldm_unet_checkpoint, "unet"),
        "the VAE": (AutoencoderKL, convert_ldm_vae_checkpoint, "vae"),
    }.get(component, (None, None, None))
    if cls is None:
        return None
    try:
        config = cls.load_config(str(config_dir), subfolder=subfolder, local_files_only=True)
        with init_empty_weights():
            expected = cls.from_config(config).state_dict()
        converted = convert(checkpoint=sd, config=config)
    except Exception:  # the conversion itself fails: let the caller report the original error
        return None
    for key, value in converted.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            return (
                f"{component} does not match the architecture in {config_dir}: {key} has shape "
                f"{tuple(value.shape)} in the checkpoint, {tuple(expected[key].shape)} in the config"
            )
    missing = [k for k in expected if k not in converted]
    if missing and all(k in expected for k in converted):
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"the checkpoint has no weights for {component} {missing[0]}{more}"
    return None


def _check_config_dir(config_dir: Path, extra: tuple[str, ...] = ()) -> None:
    needed = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json")
    for rel in (*needed, *extra):
        if not (config_dir / rel).is_file():
            raise ModelLoadError(f"{config_dir}: not a diffusers config directory (no {rel})")


def _load_single_file(path: Path, kind: Kind, dtype: torch.dtype, config_dir: Path | None):
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ModelLoadError(f"{path}: unsupported file type; expected one of {', '.join(CHECKPOINT_SUFFIXES)}")
    sd = _normalize_clip_keys(_read_checkpoint(path))
    label = str(path)
    if UNET_IN_KEY not in sd:
        what = "; SD 3 layouts are not supported" if any(k.startswith("text_encoders.") for k in sd) else ""
        raise ModelLoadError(f"{label}: not a Stable Diffusion checkpoint in the LDM layout (no {UNET_IN_KEY}){what}")
    if any(k.startswith("conditioner.embedders.") for k in sd):  # generative-models' layout: SDXL
        return _load_sdxl_single_file(sd, label, kind, dtype, config_dir)
    _check_kind(int(sd[UNET_IN_KEY].shape[1]), kind, label)
    default_config = config_dir is None
    config_dir = SINGLE_FILE_CONFIGS[kind] if default_config else config_dir
    _check_config_dir(config_dir)
    if default_config and any(k.startswith("cond_stage_model.model.") for k in sd):
        raise ModelLoadError(
            f"{label}: has an OpenCLIP text encoder (Stable Diffusion 2.x); the shipped configs are SD 1.x, pass "
            "config= a diffusers directory of an SD 2.x model"
        )
    for component, prefixes in LDM_COMPONENTS.items():
        if not any(k.startswith(prefixes) for k in sd):
            raise ModelLoadError(f"{label}: the checkpoint has no weights for {component} ({prefixes[0]}*)")
    _check_unet_channels(sd, label, config_dir)

    from transformers import CLIPTextModel

    hint = "; the shipped configs are Stable Diffusion 1.x, pass config= for others" if default_config else ""
    unet, vae, text_encoder = _load_components(
        sd, label, config_dir, dtype, {"the text encoder": (CLIPTextModel, "text_encoder")}, hint
    )
    # the shipped SD 1.5 configs have no tokenizer: CLIP ViT-L/14's is the CLIP BPE shipped in emphasize.assets
    tokenizer = _single_file_tokenizer(config_dir, "tokenizer", text_encoder.config.max_position_embeddings)
    return _pipeline_class(kind)(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_single_file_scheduler(config_dir),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _load_sdxl_single_file(
    sd: dict[str, torch.Tensor], label: str, kind: Kind, dtype: torch.dtype, config_dir: Path | None
):
    """An SDXL base checkpoint (`sd_xl_base_1.0.safetensors` layout: `model.diffusion_model.*`,
    `first_stage_model.*`, CLIP ViT-L under `conditioner.embedders.0.transformer.*` and OpenCLIP ViT-bigG under
    `conditioner.embedders.1.model.*`) on the shipped SDXL base configs or on `config_dir`."""
    if not any(k.startswith(SGM_CLIP_PREFIX) for k in sd):
        what = (
            "the SDXL refiner (OpenCLIP only), an image-to-image model"
            if any(k.startswith("conditioner.embedders.0.model.") for k in sd)
            else "an SDXL-layout checkpoint without CLIP ViT-L"
        )
        raise ModelLoadError(f"{label}: {what}; text-to-image supports SDXL base checkpoints")
    if kind != "t2i":
        raise ModelLoadError(f"{label}: an SDXL checkpoint; {KIND_NAMES[kind]} supports Stable Diffusion 1.x layouts")
    _check_kind(int(sd[UNET_IN_KEY].shape[1]), kind, label)
    default_config = config_dir is None
    config_dir = SDXL_CONFIGS if default_config else config_dir
    _check_config_dir(config_dir, ("text_encoder_2/config.json",))
    for component, prefix in (
        ("the VAE", LDM_COMPONENTS["the VAE"]),
        ("the second text encoder", (SGM_OPEN_CLIP_PREFIX,)),
    ):
        if not any(k.startswith(prefix) for k in sd):
            raise ModelLoadError(f"{label}: the checkpoint has no weights for {component} ({prefix[0]}*)")
    _check_unet_channels(sd, label, config_dir)

    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    hint = "; the shipped configs are SDXL base 1.0, pass config= for others" if default_config else ""
    encoders = {
        "the text encoder": (CLIPTextModel, "text_encoder"),
        "the second text encoder": (CLIPTextModelWithProjection, "text_encoder_2"),
    }
    unet, vae, text_encoder, text_encoder_2 = _load_components(sd, label, config_dir, dtype, encoders, hint)
    index_file = config_dir / "model_index.json"
    index = _read_json(index_file, str(config_dir)) if index_file.is_file() else {}
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        # no tokenizer files with the shipped configs: both SDXL tokenizers are the CLIP BPE, the second padding
        # with "!" (OpenCLIP's)
        tokenizer=_single_file_tokenizer(config_dir, "tokenizer", text_encoder.config.max_position_embeddings),
        tokenizer_2=_single_file_tokenizer(
            config_dir, "tokenizer_2", text_encoder_2.config.max_position_embeddings, pad_token="!"
        ),
        unet=unet,
        scheduler=_single_file_scheduler(config_dir),
        force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
    )


def _check_unet_channels(sd: dict[str, torch.Tensor], label: str, config_dir: Path) -> None:
    unet_channels = _read_json(config_dir / "unet" / "config.json", str(config_dir)).get("in_channels", 4)
    if unet_channels != sd[UNET_IN_KEY].shape[1]:
        raise ModelLoadError(
            f"{label}: the checkpoint's UNet has {sd[UNET_IN_KEY].shape[1]} input channels but the config in "
            f"{config_dir} has {unet_channels}"
        )


def _load_components(
    sd: dict[str, torch.Tensor],
    label: str,
    config_dir: Path,
    dtype: torch.dtype,
    text_encoders: dict[str, tuple[type, str]],
    hint: str,
) -> list:
    """The UNet, the VAE and the text encoders of an LDM checkpoint, in that order, on `config_dir`'s configs.

    Args:
        sd: the checkpoint's tensors.
        label: the checkpoint, for messages.
        config_dir: a diffusers directory of component configs.
        dtype: weights dtype.
        text_encoders: component name -> (transformers class, subfolder), in pipeline order.
        hint: appended to a mismatch message (which configs were used).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    common = dict(config=str(config_dir), local_files_only=True)
    cast = _dtype_kwarg(dtype)
    loaders = {
        # EMA weights when the checkpoint has both (as non-pruned SD checkpoints do): the ones meant for sampling
        "the UNet": lambda: UNet2DConditionModel.from_single_file(
            sd, subfolder="unet", extract_ema=True, **common, **cast
        ),
        "the VAE": lambda: AutoencoderKL.from_single_file(sd, subfolder="vae", **common, **cast),
    }
    for component, (cls, subfolder) in text_encoders.items():
        loaders[component] = lambda cls=cls, subfolder=subfolder: create_diffusers_clip_model_from_ldm(
            cls, sd, subfolder=subfolder, torch_dtype=dtype, **common
        )
    modules = []
    for component, loader in loaders.items():
        try:
            with _without_empty_fp32_warning():
                modules.append(_check_component(loader(), component, label))
        except ModelLoadError:
            raise
        except Exception as e:  # missing keys, shape mismatches, unknown layouts: the checkpoint does not fit
            reason = _diagnose(component, sd, config_dir) or (
                f"{component} does not match the architecture in {config_dir} ({_one_line(e)})"
            )
            raise ModelLoadError(f"{label}: {reason}{hint}") from e
    return modules


def _single_file_scheduler(config_dir: Path):
    import diffusers

    scheduler_config = _read_json(config_dir / "scheduler" / "scheduler_config.json", str(config_dir))
    scheduler_cls = getattr(diffusers, str(scheduler_config.get("_class_name")), None)
    if scheduler_cls is None:
        raise ModelLoadError(f"{config_dir}: unknown scheduler {scheduler_config.get('_class_name')!r}")
    return scheduler_cls.from_config(scheduler_config)


def _single_file_tokenizer(config_dir: Path, subfolder: str, max_length: int, pad_token: str | None = None):
    """The config directory's tokenizer files when it has them, else the CLIP BPE shipped in emphasize.assets."""
    folder = config_dir / subfolder
    if (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file():
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(config_dir), subfolder=subfolder, local_files_only=True)
    from emphasize.models.tokenizer import load_clip_tokenizer

    return load_clip_tokenizer(max_length, pad_token=pad_token)


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """diffusers renamed `torch_dtype` to `dtype` (PR #14205, deprecated until 1.0); older releases only know
    `torch_dtype`. Passing it at load time avoids `ModelMixin.to(dtype)`'s spurious float32 warning."""
    import diffusers
    from diffusers.utils import deprecation_utils
    from packaging.version import Version

    new = hasattr(deprecation_utils, "_resolve_dtype") or Version(diffusers.__version__) >= Version("1.0.0.dev0")
    return {"dtype": dtype} if new else {"torch_dtype": dtype}


@contextlib.contextmanager
def _without_empty_fp32_warning():
    """Silence `ModelMixin.to(dtype)`'s "modules that should be kept in float32: []" warning, which diffusers logs
    even when no module needs float32 (from_single_file casts with `.to(dtype)` itself)."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("There are modules in")

    logger = logging.getLogger("diffusers.models.modeling_utils")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
