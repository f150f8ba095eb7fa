"""`agrl score --ray`: score a whole catalog on a Ray cluster (Ray Data `map_batches` over an actor pool).

The input, a folder or glob of JSONL / Parquet / CSV files, is cut into shards: one file's row range
each, fixed by the file and `rows_per_shard`, so every run cuts the same shards. Each shard is one item
of a Ray dataset; an actor of the pool (one model each) reads the shard's rows, scores them (score.Scorer)
and writes OUTDIR/shards/NAME.parquet (or .jsonl), its bad rows first to OUTDIR/rejects/NAME.jsonl.
Both are written to a temporary file and renamed into place, so a shard file exists only complete:
exactly once by output shard. A worker killed mid-shard is restarted by Ray and the shard redone whole;
a rerun after the driver is killed scores only the shards missing. OUTDIR/manifest.json records the
maker (the model's fingerprint, scheme, tier threshold, as `agrl score` does) and the plan; a rerun
with another model or plan is refused. Ray is imported only here and only when called (`agrl[cluster]`).

    score_catalog("runs/mine", "catalog/*.jsonl", "scores", ray_address="local", actors=2)
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agrl.model import load as models
from agrl.data.records import check_data_scheme, check_source, first_line, iter_row_range, resolve_scheme, table_size
from agrl.errors import UserError
from agrl.files import atomic_open, atomic_write, model_dir, positive
from agrl.data.schemes import Scheme, load_scheme
from agrl.model.score import (
    FileReport,
    _lock,
    _triage,
    check_maker,
    check_model_scheme,
    check_threshold,
    label_token_ids,
    made_by,
    result_row,
)

SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".parquet")
FORMATS = ("parquet", "jsonl")
MANIFEST = "manifest.json"


# ---------------------------------------------------------------------------- the plan: files -> shards


def input_files(spec: str) -> list[Path]:
    """The records files of a folder (its .jsonl/.csv/.parquet files), a glob, or one file; sorted."""
    path = Path(spec)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES]
    elif any(ch in spec for ch in "*?["):
        files = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
    else:
        files = [path] if path.exists() else []
    if not files:
        raise UserError(f"--input {spec}: no records files there (a folder, a glob such as 'DIR/*.jsonl', "
                        "or a file; .jsonl, .csv or .parquet)")
    return sorted(files)


def plan_shards(files: list[Path], rows_per_shard: int) -> list[dict]:
    """Shards of `rows_per_shard` rows (lines, in a JSONL file), file by file. A JSONL file is read once
    here, unparsed, for its line count and the byte offset of each shard's first line."""
    shards = []
    for path in files:
        check_source(path, probe=True)  # a corrupt table fails here, before a model loads
        tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem)[:40]
        if path.suffix in (".jsonl", ".json", ".ndjson"):
            starts, offset, lines = [(1, 0)], 0, 0
            with path.open("rb") as handle:
                for lines, data in enumerate(handle, start=1):
                    offset += len(data)
                    if lines % rows_per_shard == 0:
                        starts.append((lines + 1, offset))
            end = lines + 1
        else:
            base = first_line(path)
            end = base + table_size(path)
            starts = [(line, 0) for line in range(base, end, rows_per_shard)] or [(base, 0)]
        for first, byte in starts:
            last = min(first + rows_per_shard, end)
            if last > first:
                shards.append({"name": f"{stem}-{tag}-{first:09d}-{last:09d}", "file": str(path.resolve()),
                               "first": first, "end": last, "offset": byte})
    return shards


# ---------------------------------------------------------------------------- the output folder


def shard_path(outdir: Path, name: str, fmt: str) -> Path:
    return outdir / "shards" / f"{name}.{fmt}"


def rejects_file(outdir: Path, name: str) -> Path:
    return outdir / "rejects" / f"{name}.jsonl"


def claim_outdir(outdir: Path, maker: dict, plan: dict) -> dict:
    """Refuse OUTDIR if another maker or plan wrote it (or shards are there with no manifest); else
    record ours in OUTDIR/manifest.json. Returns the manifest."""
    manifest = outdir / MANIFEST
    shards = outdir / "shards"
    if manifest.is_file():
        try:
            theirs = json.loads(manifest.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"{manifest}: not valid JSON; it records what made {outdir}'s shards, so write to "
                            "a new --output") from None
        check_maker(outdir, manifest, theirs.get("maker") if isinstance(theirs, dict) else None, maker)
        for key, option in (("format", "--format"), ("rows_per_shard", "--rows-per-shard")):
            if theirs.get(key) != plan[key]:
                raise UserError(f"--output {outdir}: written with {option} {theirs.get(key)}, this run has "
                                f"{plan[key]} ({MANIFEST}); resume with the same options, or write to a new --output")
        were = {f["path"]: f["bytes"] for f in theirs.get("inputs", [])}
        changed = [f["path"] for f in plan["inputs"] if f["path"] in were and were[f["path"]] != f["bytes"]]
        if changed:
            raise UserError(f"--input {changed[0]}: changed size since {outdir} was started ({MANIFEST}); its "
                            "shards' row ranges no longer hold, so write to a new --output")
    elif shards.is_dir() and any(p.name[0] != "." for p in shards.iterdir()):
        raise UserError(f"--output {outdir}: holds shards but no {MANIFEST} saying which model made them; "
                        "write to a new --output")
    record = {"maker": maker, **plan, "complete": False}
    atomic_write(manifest, json.dumps(record, indent=2) + "\n")
    return record


def _clear_temporaries(outdir: Path) -> None:
    """A shard being written when its worker or the driver died leaves its temporary file: never a result."""
    for folder in (outdir / "shards", outdir / "rejects"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)


def shard_rows(outdir: Path, name: str, fmt: str) -> int:
    path = shard_path(outdir, name, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


# ---------------------------------------------------------------------------- the actor


def parquet_schema(scheme: Scheme):
    """`agrl score`'s fields (score.result_row) plus the model's fingerprint."""
    import pyarrow as pa

    probabilities = pa.struct([(str(code), pa.float64()) for code in scheme.codes])
    return pa.schema([("id", pa.string()), ("label", pa.int64()), ("label_name", pa.string()),
                      ("score", pa.float64()), ("tier", pa.string()), ("probabilities", probabilities),
                      ("fingerprint", pa.string())])


class ShardScorer:
    """One model per actor; `__call__` scores a batch of shards, writing each to OUTDIR, and returns
    what it did per shard (name, scored, rejected, first rejects)."""

    def __init__(self, model: str, scheme: str, batch_size: int, tier_threshold: float, fingerprint: str,
                 outdir: str, fmt: str):
        from agrl.model.score import Scorer

        self.scorer = Scorer(model, scheme=scheme, batch_size=batch_size, tier_threshold=tier_threshold)
        self.fingerprint, self.outdir, self.fmt = fingerprint, Path(outdir), fmt

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {"name": [], "scored": [], "rejected": [], "first_rejects": []}
        for i in range(len(batch["name"])):
            shard = {key: batch[key][i].item() if hasattr(batch[key][i], "item") else batch[key][i]
                     for key in batch}
            report = self.score_shard(shard)
            out["name"].append(shard["name"])
            out["scored"].append(report.scored)
            out["rejected"].append(report.rejected)
            out["first_rejects"].append(json.dumps(report.first_rejects))
        return out

    def score_shard(self, shard: dict) -> FileReport:
        scheme = self.scorer.scheme
        report = FileReport()
        pending, bad = [], []
        rows = iter_row_range(shard["file"], shard["first"], shard["end"], shard["offset"])
        for item in _triage(self.scorer, shard["file"], (0, 1), set(), report, lambda: None, rows=rows):
            if isinstance(item, dict):
                bad.append(item)
                if len(report.first_rejects) < 20:
                    report.first_rejects.append(f"{shard['file']}:{item['line']}: {item['field']}: {item['message']}")
            else:
                pending.append(item)
        results = self.scorer.score_ids([ids for _, ids in pending])
        lines = [result_row(rid, result, scheme) | {"fingerprint": self.fingerprint}
                 for (rid, _), result in zip(pending, results)]
        report.scored = len(lines)
        # Rejects first: the shard file is the mark that the shard is done, so it is renamed in last.
        with atomic_open(rejects_file(self.outdir, shard["name"])) as handle:
            handle.writelines(json.dumps(b, ensure_ascii=False) + "\n" for b in bad)
        target = shard_path(self.outdir, shard["name"], self.fmt)
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            with atomic_open(target, "wb") as handle:
                pq.write_table(pa.Table.from_pylist(lines, schema=parquet_schema(scheme)), handle)
        else:
            with atomic_open(target) as handle:
                handle.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        return report


# ---------------------------------------------------------------------------- the driver


@dataclass
class CatalogReport:
    shards: int = 0  # in the plan
    resumed: int = 0  # shards found done
    scored: int = 0  # pairs scored by this run
    rejected: int = 0  # rows rejected by this run
    rows: int = 0  # result rows in OUTDIR after this run
    seconds: float = 0.0  # scoring, after Ray is up
    startup_seconds: float = 0.0  # ray.init
    first_rejects: list[str] = field(default_factory=list)


def connect(address: str, **init_args) -> bool:
    """Join the cluster at `address` ("local" starts one here, "auto" finds a running one); False when
    this process was connected already (then it is not ours to shut down)."""
    try:
        import ray
    except ImportError:
        raise UserError('--ray needs Ray Data: pip install "agrl[cluster]"') from None
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        ray.init(address=address, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False, **init_args)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise UserError(f"--ray {address}: cannot join the Ray cluster ({str(err).splitlines()[0]})") from None
    return True


def preflight(model: str, shard: str, rejects: str | None, device: str | None, batch_size: int,
              rows_per_shard: int, actors: int | None, gpus_per_actor: float, cpus_per_actor: float,
              tier_threshold: float) -> None:
    """`agrl score --ray`'s checks of its options, before a cluster is started: the single-file options
    that do not apply, the counts, the threshold, the model's folder."""
    for option, given in (("--shard", shard != "0/1"), ("--rejects", rejects), ("--device", device)):
        if given:
            raise UserError(f"{option}: not with --ray (the cluster shards the input, rejects go to OUTPUT/rejects, "
                            "--gpus-per-actor places the model)")
    for value, option in ((batch_size, "--batch-size"), (rows_per_shard, "--rows-per-shard"), (actors, "--actors"),
                          (cpus_per_actor, "--cpus-per-actor")):
        positive(value, option)
    positive(gpus_per_actor, "--gpus-per-actor", zero_ok=True)
    check_threshold(tier_threshold)
    model_dir(model)


def score_catalog(model: str | Path, input: str, output: str | Path, ray_address: str = "local",
                  scheme: str | None = None, actors: int | None = None, gpus_per_actor: float = 0.0,
                  cpus_per_actor: float = 1.0, batch_size: int = 32, tier_threshold: float = 0.6,
                  rows_per_shard: int = 10_000, fmt: str = "parquet", progress: bool = False,
                  init_args: dict | None = None) -> CatalogReport:
    """Score every pair of `input`'s files into `output`/shards on the cluster at `ray_address`."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    check_threshold(tier_threshold)
    files = input_files(input)
    scheme_obj = load_scheme(resolve_scheme(files[0], scheme, model))  # as `agrl score` resolves it
    check_model_scheme(model, scheme_obj)
    # The actors' one check that needs the model, made here once: a tokenizer without a token per label
    # code is then one line, not an actor pool dying at start.
    label_token_ids(models.load_tokenizer(model), scheme_obj)
    for path in files:
        check_data_scheme(path, scheme_obj)
    outdir = Path(output)
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"--output {outdir}: is a file; --ray writes a folder of shards")
    outdir.mkdir(parents=True, exist_ok=True)
    maker = made_by(model, scheme_obj, tier_threshold)
    shards = plan_shards(files, rows_per_shard)
    plan = {"format": fmt, "rows_per_shard": rows_per_shard, "shards": len(shards),
            "inputs": [{"path": str(p.resolve()), "bytes": p.stat().st_size} for p in files]}
    report = CatalogReport(shards=len(shards))
    with (outdir / ".lock").open("a") as lock:
        _lock(lock, outdir)  # one driver per OUTDIR: two would score the same shards
        manifest = claim_outdir(outdir, maker, plan)
        _clear_temporaries(outdir)
        todo = [s for s in shards if not shard_path(outdir, s["name"], fmt).is_file()]
        report.resumed = len(shards) - len(todo)
        if todo:
            _run(todo, report, model, scheme_obj.name, batch_size, tier_threshold, maker["fingerprint"], outdir,
                 fmt, ray_address, actors, gpus_per_actor, cpus_per_actor, progress, init_args or {})
        _clear_temporaries(outdir)
        with atomic_open(outdir / "rejects.jsonl") as merged:  # all shards' bad rows, in input order
            for shard in shards:
                path = rejects_file(outdir, shard["name"])
                if path.is_file():
                    merged.write(path.read_text(encoding="utf-8"))
        report.rows = sum(shard_rows(outdir, s["name"], fmt) for s in shards)
        atomic_write(outdir / MANIFEST, json.dumps(manifest | {"complete": True, "rows": report.rows}, indent=2)
                     + "\n")
    return report


def _run(todo, report, model, scheme, batch_size, tier_threshold, fingerprint, outdir, fmt, address, actors,
         gpus_per_actor, cpus_per_actor, progress, init_args) -> None:
    start = time.perf_counter()
    ours = connect(address, **init_args)
    report.startup_seconds = time.perf_counter() - start
    import ray

    try:
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its INFO lines would bury agrl's progress bar
        ray.data.DataContext.get_current().enable_progress_bars = False
        if actors is None:  # as many as the cluster holds: one per GPU (or per gpus_per_actor), else per CPU
            have = ray.cluster_resources()
            actors = max(1, int(have.get("GPU", 0) // gpus_per_actor) if gpus_per_actor
                         else int(have.get("CPU", 1) // cpus_per_actor))
        start = time.perf_counter()
        items = ray.data.from_items(todo, override_num_blocks=len(todo))
        scored = items.map_batches(
            ShardScorer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(actors, len(todo))),
            num_cpus=cpus_per_actor,
            num_gpus=gpus_per_actor or None,
            fn_constructor_kwargs={"model": str(Path(model).resolve()), "scheme": scheme, "batch_size": batch_size,
                                   "tier_threshold": tier_threshold, "fingerprint": fingerprint,
                                   "outdir": str(outdir.resolve()), "fmt": fmt},
        )  # Ray Data restarts a dead actor and retries its shard (max_restarts=-1, max_task_retries=-1)
        with _progress(progress, len(todo)) as advance:
            for row in scored.iter_rows():
                report.scored += int(row["scored"])
                report.rejected += int(row["rejected"])
                report.first_rejects.extend(json.loads(row["first_rejects"])[: 20 - len(report.first_rejects)])
                advance()
        report.seconds = time.perf_counter() - start
    except Exception as err:
        user = _user_error(err)
        if user is None:
            raise
        raise user from None
    finally:
        if ours:
            ray.shutdown()


def _user_error(err: BaseException) -> UserError | None:
    """The UserError an actor raised (a file gone unreadable mid-run), out of Ray's wrappers."""
    seen, first = set(), err
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        cause = getattr(err, "cause", None)  # a RayTaskError is also an instance of the error it wraps
        if isinstance(err, UserError) and cause is None:
            return err
        err = cause or err.__cause__
    # An actor that died in its constructor reaches the driver as text only (ray.exceptions.ActorDiedError).
    said = re.search(r"agrl\.errors\.UserError: ([^\n]+)", str(first))
    return UserError(said[1]) if said else None


@contextmanager
def _progress(enabled: bool, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("shards"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not enabled, console=Console(stderr=True)) as bars:
        task = bars.add_task("score", total=total)
        yield lambda: bars.advance(task, 1)
