"""Safe file handling for every command: input checks, output-vs-input clashes, atomic writes.

Every output file is written to a temporary file beside it and renamed over it (`atomic_write`,
`atomic_open`), so a kill or a full disk leaves the old file or the new one, never half of either.
Inputs are checked before any work starts (`input_file`, `yaml_file`), outputs are refused when they
are an input (`distinct`) or a non-empty directory that is not ours to replace (`empty_dir`).

    with atomic_open(out) as handle: handle.write(text)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml

from agrl.errors import UserError


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """A handle on a temporary file in path's directory; renamed over `path` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write text or bytes to `path` atomically; returns the path."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
    return Path(path)


def trained_with(model_dir: str | Path, key: str) -> str | None:
    """A key of the run config (config.yaml) that `agrl train` wrote beside a model: the scheme or the
    rules it trained with; None for a model agrl did not train (or an unreadable config)."""
    config = Path(model_dir) / "config.yaml"
    try:
        value = (yaml.safe_load(config.read_text()) or {}).get(key) if config.is_file() else None
    except (yaml.YAMLError, AttributeError, OSError):
        return None
    return value if isinstance(value, str) else None


def read_jsonl_tolerant(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL log written by appending: a last line cut by a kill is dropped, not fatal.

    A bad line anywhere else is a UserError naming FILE:LINE (the file was edited or is not ours).
    """
    return [row for _, row in numbered_jsonl_tolerant(path)]


def numbered_jsonl_tolerant(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, row) for `read_jsonl_tolerant`."""
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except (ValueError, UnicodeDecodeError):
            if number == len(lines):  # no newline after it: the write was cut short
                break
            raise UserError(f"{path}:{number}: bad JSON line; repair or delete the line") from None
    return rows


# ---------------------------------------------------------------------------- checks before work


def input_file(path: str | Path, what: str = "input") -> Path:
    """An existing, readable regular file; UserError otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such {what} file; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a {what} file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: cannot read the {what} file (permission denied)")
    return path


class _UniqueKeys(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key_node.tag != "tag:yaml.org,2002:merge" and key is not None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (which one counts?)", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def yaml_file(path: str | Path, what: str) -> Any:
    """The parsed content of a YAML file; UserError naming FILE:LINE on a syntax error or a key given twice."""
    path = input_file(path, what)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeys)  # a SafeLoader
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); save the {what} as UTF-8") from None
    except yaml.YAMLError as err:
        mark, context = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if context is not None and getattr(err, "context", None):  # where the unclosed thing began
            problem += f" ({err.context} at line {context.line + 1})"
        raise UserError(f"{where}: malformed YAML in the {what}: {problem}") from None


def _same(a: str | Path, b: str | Path) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


def distinct(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None]) -> None:
    """Refuse an output path that is an input path or another output's path (names are option names)."""
    named_in = [(n, p) for n, p in inputs.items() if p is not None and not str(p).startswith("hf:")]
    named_out = [(n, p) for n, p in outputs.items() if p is not None]
    for index, (name, path) in enumerate(named_out):
        for other, source in named_in + named_out[:index]:
            if _same(path, source):
                raise UserError(f"{name} {path} is also {other}: it would be overwritten; choose another path")


def empty_dir(path: str | Path, what: str, force: bool = False) -> Path:
    """A directory we may fill: missing, empty, or (with force) anything but a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file, expected a {what} directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise UserError(f"{path}: {what} directory is not empty; pass --force to replace it, or choose another")
    return path


def positive(value: float | None, name: str, zero_ok: bool = False) -> None:
    """Refuse a negative (or zero) count/limit/size option."""
    if value is not None and not (value > 0 or (zero_ok and value == 0)):  # NaN fails both
        bound = ">= 0" if zero_ok else ">= 1"
        raise UserError(f"{name} must be {bound}, got {value}")


# ---------------------------------------------------------------------------- model directories

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is unusable (truncated, not safetensors), or None: header + sizes only."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or length > size - 8:
                return "truncated (header runs past the end)"
            header = json.loads(handle.read(length))
    except (ValueError, UnicodeDecodeError):
        return "not a safetensors file"
    ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"]
    if 8 + length + max(ends, default=0) > size:
        return f"truncated ({size} bytes, the header promises {8 + length + max(ends)})"
    return None


ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def model_dir(path: str | Path, what: str = "--model") -> Path:
    """A local Hugging Face model folder with a config, complete weights and a tokenizer, or a LoRA adapter
    folder (adapter config and weights) whose base is such a folder; UserError otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path}: no such model directory; build one with `agrl model init` or train one")
    if not path.is_dir():
        raise UserError(f"{what} {path}: is a file; give the model's directory (HF save_pretrained format)")
    adapter = (path / "adapter_config.json").is_file()
    config = "adapter_config.json" if adapter else "config.json"
    missing = [name for name in (config,) if not (path / name).is_file()]
    weights = [path / name for name in (ADAPTER_FILES if adapter else WEIGHT_FILES) if (path / name).is_file()]
    tokenizer = any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    if missing or not weights or not tokenizer:
        lacks = missing + ([] if weights else ["weights (model.safetensors)"]) + ([] if tokenizer else ["tokenizer"])
        raise UserError(f"{what} {path}: not a model directory (no {', '.join(lacks)}); "
                        "give a folder written by `agrl model init`, `agrl train` or save_pretrained")
    try:
        settings = json.loads((path / config).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{what} {path}/{config}: not valid JSON; the model directory is damaged") from None
    for file in weights:
        problem = safetensors_problem(file) if file.suffix == ".safetensors" else None
        if problem:
            raise UserError(f"{what} {file}: weights {problem}; copy or train the model again")
    if adapter:  # the adapter's base must itself be a model directory
        base = settings.get("base_model_name_or_path") if isinstance(settings, dict) else None
        if not base:
            raise UserError(f"{what} {path}/{config}: names no base_model_name_or_path")
        model_dir(base, f"{what} {path}: its base")
    return path


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A fresh temporary directory beside `path`, swapped in for it when the block succeeds."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
