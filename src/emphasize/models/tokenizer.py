"""The real CLIP byte-pair-encoding tokenizer, built offline from the BPE file shipped in the package.

OpenAI's CLIP (and so Stable Diffusion 1.x) tokenizes with `bpe_simple_vocab_16e6.txt.gz` (MIT licence, shipped in
`emphasize/assets/`). The vocabulary is derived exactly as OpenAI's `SimpleTokenizer` does: the 256 byte-unicode
characters, the same with `</w>`, the first 48894 merges joined, then `<|startoftext|>` and `<|endoftext|>`
(49408 entries). The result is token-for-token the tokenizer of `openai/clip-vit-large-patch14`.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import tempfile
from importlib import resources
from pathlib import Path

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # merges used by CLIP: vocab 49408 = 2*256 bytes + merges + 2 special tokens
MAX_LENGTH = 77  # CLIP text context length (SOT + 75 tokens + EOT)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """Derive CLIP's `vocab.json` mapping and `merges.txt` lines from the shipped BPE file."""
    raw = resources.files("emphasize.assets").joinpath(BPE_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer_files(directory: str | os.PathLike) -> Path:
    """Write `vocab.json` and `merges.txt` of the CLIP BPE into `directory` (atomically) and return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    payloads = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
    }
    for name, text in payloads.items():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, directory / name)
    return directory


@functools.lru_cache(maxsize=1)
def _tokenizer_dir() -> Path:
    cache = Path(os.environ.get("EMPHASIZE_CACHE", Path.home() / ".cache" / "emphasize")) / "clip-bpe"
    if not (cache / "vocab.json").exists() or not (cache / "merges.txt").exists():
        write_clip_tokenizer_files(cache)
    return cache


def load_clip_tokenizer(max_length: int = MAX_LENGTH, pad_token: str | None = None):
    """Return the real CLIP BPE tokenizer (`transformers.CLIPTokenizer`, Rust-backed, with offsets), offline.

    Args:
        max_length: the model's context length (`model_max_length`), 77 for CLIP.
        pad_token: the padding token; None keeps OpenAI CLIP's `<|endoftext|>`. SDXL's second tokenizer (OpenCLIP
            ViT-bigG's) pads with `"!"` (id 0).
    """
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(_tokenizer_dir()), local_files_only=True)
    tok.model_max_length = max_length
    if pad_token is not None:
        tok.pad_token = pad_token
    return tok
