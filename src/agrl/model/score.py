"""Production scoring (spec section 8): the label posterior after prefill, without decoding.

The prompt plus the `<label>` prefix goes through the model once; a softmax over the logits of the
scheme's label tokens at the last position gives P(label). From it: the expected relevance
sum(code * p), the argmax label, and a CumPT tier (TaoSR1; see `cumpt_tier`). Batches are sorted
by length and left-padded, so a pair's probabilities do not depend on its batch. `judge` is the
audit path: it generates the full label and reasoning. `score_file` streams a file (`agrl score`).

    scorer = Scorer("runs/agrl"); [r.to_dict(scorer.scheme) for r in scorer.score(records)]
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from agrl.model import load as models
from agrl.data.records import (
    Record,
    RowError,
    check_data_scheme,
    check_judge_scheme,
    check_not_empty,
    check_source,
    iter_rows,
    parse_record,
    resolve_scheme,
    row_id,
    scheme_of,
)
from agrl.errors import UserError
from agrl.files import atomic_open, atomic_write, distinct, model_dir, model_fingerprint, output_file, positive, try_lock
from agrl.core.output import LABEL_CLOSE, LABEL_OPEN
from agrl.core.prompt import prompt_text
from agrl.data.schemes import Scheme, load_scheme


@dataclass(frozen=True)
class ScoreResult:
    probabilities: dict[int, float]  # label code -> P(label), over the scheme's levels
    score: float  # expected relevance: sum(code * p)
    label: int  # argmax code
    tier: str  # Good / Mid / Bad, by CumPT

    def to_dict(self, scheme: Scheme) -> dict:
        return {
            "label": self.label,
            "label_name": scheme.name_of(self.label),
            "score": self.score,
            "tier": self.tier,
            "probabilities": {str(code): p for code, p in self.probabilities.items()},
        }


def cumpt_tier(probabilities: dict[int, float], scheme: Scheme, threshold: float = 0.6) -> str:
    """Cumulative-probability tiering (CumPT, TaoSR1).

    Walk the levels from the best down, adding their probabilities, and stop at the first level
    where the sum reaches `threshold`. The level reached gives the tier: the scheme's best level
    -> "Good"; any other good level (scheme.good) -> "Mid"; a level outside scheme.good -> "Bad".
    Default scheme: 4 -> Good, 3 -> Mid, 2 and 1 -> Bad. A high threshold demands more confidence
    before a pair is called Good.
    """
    assert 0.0 < threshold <= 1.0, f"tier threshold must be in (0, 1], got {threshold}"
    total = 0.0
    reached = scheme.levels[-1].code
    for level in scheme.levels:  # best first
        total += probabilities[level.code]
        if total >= threshold - 1e-9:
            reached = level.code
            break
    if reached == scheme.levels[0].code:
        return "Good"
    return "Mid" if scheme.is_good(reached) else "Bad"


def check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:  # NaN fails this too
        raise UserError(f"--tier-threshold {threshold}: must be in (0, 1]")


def check_model_scheme(model_dir: str | Path, scheme: Scheme) -> None:
    """data.check_judge_scheme (kept under its old name for callers)."""
    check_judge_scheme(model_dir, scheme)


def label_token_ids(tokenizer, scheme: Scheme) -> dict[int, int]:
    """The token that follows `<label>` for each code, found by tokenizing `<label>{code}</label>`."""
    prefix = tokenizer.encode(LABEL_OPEN, add_special_tokens=False)
    out: dict[int, int] = {}
    for code in scheme.codes:
        full = tokenizer.encode(f"{LABEL_OPEN}{code}{LABEL_CLOSE}", add_special_tokens=False)
        token = full[len(prefix)] if full[: len(prefix)] == prefix and len(full) > len(prefix) else None
        if token is None or tokenizer.decode([token]).strip() != str(code):
            raise UserError(
                f"tokenizer does not give label code {code} its own token after {LABEL_OPEN!r} "
                f"(tokens: {tokenizer.convert_ids_to_tokens(full)}); prefill scoring needs one"
            )
        out[code] = token
    if len(set(out.values())) != len(out):
        raise UserError(f"label codes share tokens: {out}")
    return out


class Scorer:
    """Prefill scorer over a local HF causal LM: a path, or an already loaded (model, tokenizer)."""

    def __init__(
        self,
        model: str | Path | tuple,
        scheme: str | Scheme | None = None,
        batch_size: int = 32,
        tier_threshold: float = 0.6,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
    ):
        if not isinstance(scheme, Scheme):  # the model's own (or the one given), else the default: data's rule
            scheme = scheme_of(None, scheme, None if isinstance(model, tuple) else model)
        self.scheme = scheme
        check_threshold(tier_threshold)
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        if not isinstance(model, tuple):
            check_model_scheme(model, self.scheme)
        self.model, self.tokenizer = model if isinstance(model, tuple) else models.load(model, device, dtype)
        self.batch_size = batch_size
        self.tier_threshold = tier_threshold
        self.label_ids = label_token_ids(self.tokenizer, self.scheme)
        self.max_length = self.model.config.max_position_embeddings
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # Widths are rounded up so a GPU sees few distinct shapes: its first pass at a new sequence
        # length costs ~70 ms on an H100 (measured), a repeat ~10 ms. On CPU padding is real work.
        self.pad_multiple = 32 if self.model.device.type == "cuda" else 8

    def prefill_text(self, record: Record) -> str:
        return prompt_text(record, self.tokenizer) + LABEL_OPEN

    def encode(self, record: Record) -> list[int]:
        """Token ids of prompt + `<label>`; ValueError when longer than the model's context."""
        return self.encode_many([record])[0]

    def encode_many(self, records: list[Record]) -> list[list[int]]:
        """`encode` for many records in one tokenizer call (the fast tokenizer batches in Rust)."""
        texts = [self.prefill_text(r) for r in records]
        sequences = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        for ids in sequences:
            if len(ids) > self.max_length:
                raise ValueError(
                    f"prompt is {len(ids)} tokens, over the model's context of {self.max_length}"
                )
        return sequences

    def score(self, records: list[Record]) -> list[ScoreResult]:
        return self.score_ids(self.encode_many(records))

    def posteriors(self, records: list[Record]) -> list[dict[int, float]]:
        return [r.probabilities for r in self.score(records)]

    def score_ids(self, sequences: list[list[int]]) -> list[ScoreResult]:
        """Score already-encoded prompts (see `encode`), in input order."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        probs: list[list[float]] = [[] for _ in sequences]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, row in zip(chunk, self._label_probs([sequences[i] for i in chunk]).tolist()):
                probs[i] = row
        return [self._result(p) for p in probs]

    @torch.inference_mode()
    def _label_probs(self, batch: list[list[int]]) -> torch.Tensor:
        width = -(-max(len(s) for s in batch) // self.pad_multiple) * self.pad_multiple
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):  # left padding: every prompt ends at the last position
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        # Positions count real tokens only, so padding does not shift a prompt's rotary positions.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self.model.device
        out = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=1,
            use_cache=False,
        )
        logits = out.logits[:, -1, list(self.label_ids.values())].float()
        return torch.softmax(logits, dim=-1).cpu()

    def warmup(self, max_width: int = 512) -> None:
        """One pass at each padded width up to `max_width`, so live traffic meets no first-time shape."""
        for width in range(self.pad_multiple, min(max_width, self.max_length) + 1, self.pad_multiple):
            self._label_probs([[self.pad_id] * width] * min(self.batch_size, 8))

    def _result(self, probs: list[float]) -> ScoreResult:
        by_code = dict(zip(self.label_ids, probs))
        label = max(by_code, key=lambda c: (by_code[c], c))
        score = sum(code * p for code, p in by_code.items())
        return ScoreResult(by_code, score, label, cumpt_tier(by_code, self.scheme, self.tier_threshold))

    def judge(self, records: list[Record], max_new_tokens: int = 160) -> list[str]:
        """Audit path: the generated label and reasoning for each record (greedy)."""
        prompts = [prompt_text(r, self.tokenizer) for r in records]
        outs = models.generate(
            self.model, self.tokenizer, prompts, max_new_tokens, batch_size=self.batch_size
        )
        return [texts[0] for texts in outs]


# ---------------------------------------------------------------------------- batch scoring of files


def parse_shard(text: str) -> tuple[int, int]:
    """`i/N` -> (i, N) with 0 <= i < N."""
    index, sep, total = text.partition("/")
    if not sep or not index.isdigit() or not total.isdigit() or not 0 <= int(index) < int(total):
        raise UserError(f"--shard must be i/N with 0 <= i < N, got {text!r}")
    return int(index), int(total)


def in_shard(rid: str, shard: tuple[int, int]) -> bool:
    index, total = shard
    return int(hashlib.sha256(rid.encode()).hexdigest()[:15], 16) % total == index


def done_ids(output: Path, repair: bool = True) -> set[str]:
    """Ids already in `output`; a last line cut by a kill is truncated away (`repair`) so it is redone.

    Any other line that is not a result names OUTPUT:LINE (the file was edited or is not ours)."""
    if not output.exists():
        return set()
    if output.is_dir():
        raise UserError(f"--output {output}: is a directory, expected a JSONL file")
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data) and repair:
        with output.open("r+b") as handle:
            handle.truncate(keep)
    done = set()
    for number, line in enumerate(data[:keep].split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            done.add(str(json.loads(line)["id"]))
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            raise UserError(f"{output}:{number}: not a score result line (id + label); repair or delete "
                            "the line, or write to a new --output") from None
    return done


def made_by_path(output: str | Path) -> Path:
    """The record beside a resumable output of what made its lines: OUTPUT.meta.json."""
    output = Path(output)
    return output.with_name(output.name + ".meta.json")


def made_by(model: str | Path, scheme: Scheme, tier_threshold: float) -> dict:
    """What makes a score result line what it is: the model's content fingerprint (its path is kept to name
    it: a moved copy is the same maker), the scheme, the tier threshold. Recorded beside the output; a
    resume by another maker is refused (`claim_output`)."""
    return {"model": str(Path(model).resolve()), "fingerprint": model_fingerprint(model), "scheme": scheme.name,
            "codes": list(scheme.codes), "tier_threshold": tier_threshold}


def claim_output(output: str | Path, maker: dict, write: bool = True) -> None:
    """Refuse to resume into `output` if its lines were made by another maker (or by an unknown one);
    else record `maker` in OUTPUT.meta.json (`write`). An empty or missing output is anybody's."""
    output, meta = Path(output), made_by_path(output)
    if output.is_file() and output.stat().st_size > 0:
        if not meta.is_file():
            raise UserError(f"--output {output}: holds results but no {meta.name} saying which model made them; "
                            "write to a new --output")
        try:
            theirs = json.loads(meta.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"{meta}: not valid JSON; it records what made {output.name}, so write to a new "
                            "--output") from None
        check_maker(output, meta, theirs, maker)
        return
    if write:
        atomic_write(meta, json.dumps(maker, indent=2) + "\n")


def check_maker(output: Path, meta: Path, theirs: object, maker: dict) -> None:
    """Refuse to add to `output` when `theirs` (what `meta` records made it) is not `maker` (`made_by`)."""
    differ = [key for key in maker if key != "model" and (not isinstance(theirs, dict)
                                                           or theirs.get(key) != maker[key])]
    if differ:
        key = "model" if "fingerprint" in differ else differ[0]
        were = theirs.get(key) if isinstance(theirs, dict) else None
        what = (f"written by model {were!r} as it was before (its weights or config changed since)"
                if key == "model" and were == maker["model"] else
                f"written with {key} {were!r}, this run has {maker[key]!r}")
        raise UserError(f"--output {output}: {what} ({meta.name}); resume with the same model and options, "
                        "or write to a new --output")


def rejects_path(output: str | Path, rejects: str | Path | None) -> Path:
    output = Path(output)
    return Path(rejects) if rejects else output.with_name(output.name + ".rejects.jsonl")


@dataclass
class FileReport:
    scored: int = 0
    resumed: int = 0  # rows found already scored in the output
    rejected: int = 0
    other_shards: int = 0
    rejects_path: str = ""
    first_rejects: list[str] = field(default_factory=list)  # `FILE:LINE: field: message`, up to 20


def preflight(model: str, input: str, output: str, rejects: str | None, shard: str, scheme: str | None,
              batch_size: int, tier_threshold: float, device: str | None) -> tuple[tuple[int, int], str, dict]:
    """`agrl score`'s checks, every one before the model loads: the options, the input (readable, not
    empty), its scheme (data.resolve_scheme), the output paths (distinct from the inputs, writable, not
    damaged, not another model's or scheme's). Returns the shard, the scheme's name and the maker record
    claim_output writes once the model has loaded."""
    part = parse_shard(shard)
    positive(batch_size, "--batch-size")
    check_threshold(tier_threshold)
    check_source(input, probe=True)
    check_not_empty(input)
    scheme = resolve_scheme(input, scheme, model)
    distinct({"--output": output, "--rejects": rejects_path(output, rejects), "--output's record": made_by_path(output)},
             {"--input": input, "--model": model})
    output_file(rejects_path(output, rejects), "--rejects")
    model_dir(model)
    models.check_device(device)
    done_ids(Path(output), repair=False)  # a damaged output is reported before the model loads
    maker = made_by(model, load_scheme(scheme), tier_threshold)
    claim_output(output, maker, write=False)  # another model's (or scheme's) output is refused before it loads
    return part, scheme, maker


def score_file(
    scorer: Scorer,
    source: str | Path,
    output: str | Path,
    rejects: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
    chunk_size: int | None = None,
    progress: bool = True,
) -> FileReport:
    """Stream records from `source`, append results to `output` (JSONL), bad rows to `rejects`.

    Resumable: ids already in `output` are skipped. A row whose id repeats an earlier row's is
    rejected (each id is scored once). Each shard of `shard=(i, N)` takes the ids hashing to i.
    Rejects are rewritten on every run (the input is read again in full).
    """
    check_source(source)
    check_data_scheme(source, scorer.scheme)
    output = Path(output)
    rejects = rejects_path(output, rejects)
    output.parent.mkdir(parents=True, exist_ok=True)
    report = FileReport(rejects_path=str(rejects))
    chunk_size = chunk_size or scorer.batch_size * 8  # several batches: length sorting has room to work
    pending: list[tuple[str, list[int]]] = []
    with (
        output.open("a", encoding="utf-8") as out,  # appended: each flushed line is a finished result
        atomic_open(rejects) as bad,  # rewritten in full each run: atomic
        _bar(progress, source) as advance,
    ):
        _lock(out, output)
        done = done_ids(output)  # read under the lock: no other run appends meanwhile

        def flush() -> None:
            results = scorer.score_ids([ids for _, ids in pending])
            for (rid, _), result in zip(pending, results):
                out.write(json.dumps(result_row(rid, result, scorer.scheme), ensure_ascii=False) + "\n")
            out.flush()
            report.scored += len(pending)
            pending.clear()

        for item in _triage(scorer, source, shard, done, report, advance):
            if isinstance(item, dict):
                bad.write(json.dumps(item, ensure_ascii=False) + "\n")
                if len(report.first_rejects) < 20:
                    report.first_rejects.append(f"{source}:{item['line']}: {item['field']}: {item['message']}")
                continue
            pending.append(item)
            if len(pending) >= chunk_size:
                flush()
        if pending:
            flush()
    return report


def _lock(handle, output: Path) -> None:
    """Hold an exclusive lock on the output while appending: two runs resuming one file would score the
    same ids twice and interleave their lines."""
    if not try_lock(handle):
        raise UserError(f"--output {output}: another `agrl score` is writing it now; wait for it, or give each "
                        "run (each --shard) its own --output") from None


def result_row(rid: str, result: ScoreResult, scheme: Scheme) -> dict:
    """One output line of `agrl score`: the row's id and its result (`agrl score --ray` writes the same)."""
    return {"id": rid} | result.to_dict(scheme)


def _triage(scorer: Scorer, source, shard, done: set[str], report: FileReport, advance, rows=None):
    """Rows to score as (id, token ids), and rejects as dicts (source, line, field, message).
    `rows`: (line, raw) pairs of `source` to triage instead of all of them (a shard of `agrl score --ray`)."""
    first_line: dict[str, int] = {}
    for line, raw in iter_rows(source) if rows is None else rows:
        advance()
        rid = row_id(raw, line)
        if not in_shard(rid, shard):
            report.other_shards += 1
            continue
        reject = {"source": str(source), "line": line, "id": rid}
        if rid in first_line:
            report.rejected += 1
            yield reject | {"field": "id", "message": f"repeats the id of line {first_line[rid]}"}
            continue
        first_line[rid] = line
        if rid in done:
            report.resumed += 1
            continue
        try:
            if isinstance(raw, RowError):
                raise raw
            ids = scorer.encode(parse_record(raw, scorer.scheme))
        except RowError as err:
            report.rejected += 1
            yield reject | {"field": err.field, "message": err.message}
            continue
        except ValueError as err:  # the prompt is longer than the model's context
            report.rejected += 1
            yield reject | {"field": "prompt", "message": str(err)}
            continue
        yield rid, ids


@contextmanager
def _bar(enabled: bool, source: str | Path):
    """progress.progress over the rows of `source` (its total counted first when it is JSONL)."""
    from agrl.progress import progress

    path = Path(str(source))
    total = None
    if path.suffix in (".jsonl", ".ndjson", ".json") and path.exists():
        with path.open("rb") as handle:
            total = sum(1 for line in handle if line.strip())
    with progress("scoring", total=total, enabled=enabled) as advance:
        yield lambda: advance(1)
