"""Safe file handling for every command: input checks, output-vs-input clashes, atomic writes.

Every output file is written to a temporary file beside it and renamed over it (`atomic_write`,
`atomic_open`), so a kill or a full disk leaves the old file or the new one, never half of either.
Inputs are checked before any work starts (`input_file`, `yaml_file`), outputs are refused when they
are an input (`distinct`) or a non-empty directory that is not ours to replace (`empty_dir`).

    with atomic_open(out) as handle: handle.write(text)
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml

from agrl.errors import UserError


def umask() -> int:
    """The process's umask (read from /proc without changing it where Linux offers that)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(path: Path, directory: bool = False) -> int:
    """The mode a plain write would leave: an existing file's own, else 0666 (0777 for a folder) less the
    umask. mkstemp/mkdtemp create 0600/0700, which would hide outputs from a teammate or a service user."""
    if not directory and path.is_file():
        return path.stat().st_mode & 0o7777
    return (0o777 if directory else 0o666) & ~umask()


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """A handle on a temporary file in path's directory; renamed over `path` only when the block succeeds.
    The file gets the mode a plain write would give it (`plain_mode`); a failure of our own steps (create,
    flush, rename) names `path`, not the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _named(path, tempfile.mkstemp, prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, plain_mode(path))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            _named(path, handle.flush)
            _named(path, os.fsync, handle.fileno())  # the data is on disk before the name points at it
        _named(path, os.replace, tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _named(path: Path, step, *args, **kwargs):
    """`step(*args)`, an OSError as a UserError naming `path` (raw errno text would name a temp file)."""
    try:
        return step(*args, **kwargs)
    except OSError as err:
        raise UserError(f"{path}: cannot write it ({err.strerror or type(err).__name__})") from None


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
    if not path.is_file():  # a FIFO would block the reader forever, a device never ends
        raise UserError(f"{path}: not a regular file (a pipe, socket or device); give a {what} file")
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


def output_file(path: str | Path, option: str, force: bool | None = None) -> Path:
    """An output file we may write: not a directory, its folder not a file, and (when `force` is given)
    not an existing file unless forced. Checked before any work, so a long run does not fail at its end."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory, expected a file path")
    parent = _folder_above(path, f"{option} {path}")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: cannot write in {parent} (permission denied)")
    if force is False and path.exists():
        raise UserError(f"{option} {path}: exists; pass --force to replace it, or choose another")
    return path


def _folder_above(path: Path, what: str) -> Path | None:
    """The nearest existing folder above `path`; UserError if that nearest existing thing is a file
    (else mkdir would fail with raw errno text)."""
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{what}: {parent} is a file, not a folder")
    return parent


def os_error_line(err: OSError, argv: list[str]) -> str:
    """One line for an OS error that reached the command line, naming the option (or argument) of `argv`
    whose path it concerns and what is wrong in words: `--out FILE: FILE is a file, not a folder`, not
    `[Errno 17] File exists: 'FILE'`. Without such an option: the path and the reason."""
    failed = os.path.abspath(err.filename) if isinstance(err.filename, (str, os.PathLike)) else None
    reason = (err.strerror or type(err).__name__).lower()
    if failed is None:  # no path (a port in use, a full disk mid-write): the error's words, less the errno
        return str(err).split("] ", 1)[-1] if str(err).startswith("[Errno") else str(err) or reason
    best = None
    for index, token in enumerate(argv):
        option, value = (token.split("=", 1) + [""])[:2] if token.startswith("--") and "=" in token else (
            (token, argv[index + 1]) if token.startswith("--") and index + 1 < len(argv) else ("", token))
        if not value or value.startswith("--"):
            continue
        given = os.path.abspath(value)
        related = os.path.commonpath([given, failed]) in (given, failed)
        if related and (best is None or len(given) > len(best[2])):
            best = (option, value, given)
    blocker = next((p for p in [Path(failed), *Path(failed).parents] if p.exists()), None)
    if err.errno in (errno.ENOTDIR, errno.EEXIST) and blocker is not None and not blocker.is_dir():
        reason = f"{blocker} is a file, not a folder"
    elif err.errno == errno.EEXIST:
        reason = f"{failed} exists"
    elif best is None or failed != best[2]:
        reason += f": {failed}"
    if best is None:
        return f"{err.filename}: {reason}"
    return f"{best[0]} {best[1]}: {reason}".lstrip()


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
    _folder_above(path, f"{what} directory {path}")
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
    tokenizer = adapter or any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    # (an adapter saved without a tokenizer uses its base's: models.load_tokenizer)
    if missing or not weights or not tokenizer:
        lacks = missing + ([] if weights else ["weights (model.safetensors)"]) + ([] if tokenizer else ["tokenizer"])
        if adapter:
            raise UserError(f"{what} {path}: not a LoRA adapter directory (no adapter weights: "
                            f"{' or '.join(ADAPTER_FILES)}); give a folder written by a lora_r > 0 run")
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


def plain_modes(folder: str | Path) -> None:
    """Give every file and folder under a folder we just wrote the mode a plain write gives (0666/0777 less
    the umask): libraries that write through temporary files (safetensors' save) leave 0600."""
    files, folders = 0o666 & ~umask(), 0o777 & ~umask()
    for root, dirs, names in os.walk(folder):
        os.chmod(root, folders)
        for name in names:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), files)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A fresh temporary directory beside `path`, swapped in for it when the block succeeds; what it holds
    then gets the modes a plain write would give (`plain_modes`)."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        plain_modes(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------- shipped stages, fingerprints, locks


def shipped_stage(name: str | Path) -> Path | None:
    """A stage config shipped in the package (agrl/recipes/stages/NAME.yaml) by its name, `sft` or
    `sft.yaml`; None for anything else (a path, an unknown name)."""
    import re
    from importlib import resources

    stem = str(name).removesuffix(".yaml")
    if not re.fullmatch(r"[A-Za-z0-9_]+", stem):
        return None
    path = Path(str(resources.files("agrl") / "recipes" / "stages" / f"{stem}.yaml"))
    return path if path.is_file() else None


def shipped_stages() -> list[str]:
    from importlib import resources

    return sorted(p.name.removesuffix(".yaml") for p in resources.files("agrl").joinpath("recipes", "stages").iterdir()
                  if p.name.endswith(".yaml"))


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over a model folder's config and weights (and an adapter's base): equal only for the same model."""
    import hashlib

    folder = Path(model_dir)
    digest = hashlib.sha256()
    names = ("config.json", "adapter_config.json", *WEIGHT_FILES, *ADAPTER_FILES)
    for name in names:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            _hash_into(digest, path)
    if (folder / "adapter_config.json").is_file():  # an adapter scores through its base: another base, another maker
        settings = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        digest.update(model_fingerprint(settings["base_model_name_or_path"]).encode())
    return digest.hexdigest()


def _hash_into(digest, path: Path) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)


def content_fingerprint(path: str | Path) -> str | None:
    """sha256 of what a path holds: a model folder's `model_fingerprint`, any other folder's files (names
    and bytes, recursively), a file's bytes; None when nothing is there."""
    import hashlib

    path = Path(path)
    if path.is_dir() and ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
        return model_fingerprint(path)
    digest = hashlib.sha256()
    if path.is_file():
        _hash_into(digest, path)
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode() + b"\0")
            _hash_into(digest, file)
    else:
        return None
    return digest.hexdigest()


def try_lock(handle) -> bool:
    """An exclusive, non-blocking flock on an open file (or a folder's descriptor): held until the handle is closed (or the
    process dies, however it dies); False when another process holds it."""
    import fcntl

    try:
        fcntl.flock(handle if isinstance(handle, int) else handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
