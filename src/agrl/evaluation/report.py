"""Reports for people: Markdown + self-contained HTML with PNG plots, from training runs and their evals.

A run directory holds what training and `agrl eval` write (nothing else is read):
    RUN_DIR/config.yaml        `method` (else the directory name) and `seed` (else trl_args.json's), flat keys
    RUN_DIR/metrics.jsonl      one JSON object per logging step: "step" + the logged keys (TRL names)
    RUN_DIR/eval/SPLIT.json    `agrl eval` output, one file per evaluated split
Runs of one method (several seeds) are pooled: mean ± standard deviation across seeds. A leaf module.

    agrl report runs/grpo runs/agrl --out runs/report
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the OO API: no pyplot state, renders with Agg
from matplotlib.ticker import MaxNLocator

from agrl.errors import UserError
from agrl.files import atomic_open, atomic_write, empty_dir, numbered_jsonl_tolerant, yaml_file
from agrl.evaluation.metrics import SCORE_METRICS, score_columns

TABLE_METRICS = (
    "accuracy",
    "macro_f1",
    "good_f1",
    "format_valid",
    "adherence",
    "step_accuracy",
    "ece",
    "ndcg@10",
)
# Curves plotted when logged, in this order: TRL's loss/reward/entropy/kl, each reward term, accuracies, AGR.
CURVE_PATTERNS = (
    r"loss",
    r"reward",
    r"rewards/[^/]+/mean",
    r"(.*/)?(mean_token_)?accuracy",
    r"eval_.*accuracy",
    r"agr/guided_group_share",
    r"agr/replay_acc",
    r"entropy",
    r"kl",
)


@dataclass
class Run:
    path: Path
    method: str
    seed: int | None = None
    log: list[dict] = field(default_factory=list)  # metrics.jsonl rows
    evals: dict[str, dict] = field(default_factory=dict)  # split name -> eval JSON


def _read_log(path: Path) -> list[dict]:
    """metrics.jsonl rows; a last line cut by a kill is dropped (training appends it)."""
    rows = numbered_jsonl_tolerant(path)
    for line_no, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("step"), (int, float)):
            # bad input at a boundary is a UserError naming file:line:field (house rule)
            raise UserError(f"{path}:{line_no}: step: each row needs a numeric 'step'")
    return [row for _, row in rows]


def load_run(path: str | Path) -> Run:
    """Read one run directory (layout in the module docstring); ValueError if it holds nothing to report."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: not a run directory (give folders that `agrl train` / `agrl eval` wrote)")
    config_path = path / "config.yaml"
    config = yaml_file(config_path, "run config") if config_path.exists() else None
    config = config if isinstance(config, dict) else {}
    log_path = path / "metrics.jsonl"
    seed = config.get("seed")
    if seed is None and (path / "trl_args.json").exists():  # every TRL value, written beside config.yaml
        try:
            seed = json.loads((path / "trl_args.json").read_text()).get("seed")
        except (ValueError, AttributeError):
            raise UserError(f"{path / 'trl_args.json'}: not a JSON object; delete it or rerun the stage") from None
    run = Run(path, str(config.get("method") or path.name), seed)
    run.log = _read_log(log_path) if log_path.exists() else []
    for eval_path in sorted(p for p in (path / "eval").glob("*.json") if p.is_file()):
        try:
            run.evals[eval_path.stem] = check_eval(json.loads(eval_path.read_text()), eval_path)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            where = f"{eval_path}:{err.lineno}" if isinstance(err, json.JSONDecodeError) else str(eval_path)
            raise UserError(f"{where}: bad JSON; rerun `agrl eval` for this split") from None
    if not run.log and not run.evals:
        raise UserError(f"{path}: neither metrics.jsonl nor eval/*.json found; is it a run directory?")
    return run


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_eval(data: object, path: Path) -> dict:
    """An eval JSON in the shape `agrl eval` writes, as far as the report reads it; UserError naming the key."""
    def bad(key: str, want: str) -> UserError:
        return UserError(f"{path}: {key}: must be {want}; rerun `agrl eval` for this split")

    if not isinstance(data, dict):
        raise bad("(top level)", "an object written by `agrl eval`")
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        raise bad("metrics", "an object of metric -> number")
    for name, value in metrics.items():
        if value is not None and not _number(value):
            raise bad(f"metrics.{name}", "a number or null")
    intervals = data.get("intervals") or {}
    if not isinstance(intervals, dict):
        raise bad("intervals", "an object of metric -> [low, high]")
    for name, interval in intervals.items():
        if interval is not None and not (isinstance(interval, list) and len(interval) == 2
                                         and all(map(_number, interval))):
            raise bad(f"intervals.{name}", "[low, high] or null")
    if not isinstance(data.get("n", 0), int) or isinstance(data.get("n"), bool):
        raise bad("n", "an integer")
    conf = data.get("confusion")
    if conf is not None:
        matrix = conf.get("matrix") if isinstance(conf, dict) else None
        if not (isinstance(matrix, list) and matrix and all(isinstance(r, list) and len(r) == len(matrix[0])
                                                              and all(map(_number, r)) for r in matrix)):
            raise bad("confusion.matrix", "a list of equal-length rows of counts")
    slices = data.get("slices", {})
    if not isinstance(slices, dict) or not all(isinstance(v, dict) for v in slices.values()):
        raise bad("slices", "an object of family -> metrics")
    return data


def by_method(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by method, methods in the order first given."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.method, []).append(run)
    return groups


# ---------------------------------------------------------------------------- numbers


def pooled(values: list[dict], metric: str) -> dict | None:
    """One method's metric over its runs: mean, spread (std across seeds, ddof 1) or the run's interval."""
    points = [(v["metrics"].get(metric), (v.get("intervals") or {}).get(metric)) for v in values]
    points = [(value, interval) for value, interval in points if value is not None]
    if not points:
        return None
    mean = float(np.mean([value for value, _ in points]))
    if len(points) == 1:
        return {"mean": mean, "spread": None, "interval": points[0][1], "runs": 1}
    return {
        "mean": mean,
        "spread": float(np.std([v for v, _ in points], ddof=1)),
        "interval": None,
        "runs": len(points),
    }


def cell(stat: dict | None) -> str:
    if stat is None:
        return "–"
    if stat["spread"] is not None:
        return f"{stat['mean']:.3f} ± {stat['spread']:.3f} ({stat['runs']} seeds)"
    if stat["interval"]:
        lo, hi = stat["interval"]
        return f"{stat['mean']:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{stat['mean']:.3f}"


def comparison(groups: dict[str, list[Run]]) -> dict[str, dict[str, dict[str, dict | None]]]:
    """split -> method -> metric -> pooled stat, for every split any run evaluated."""
    splits = sorted({split for runs in groups.values() for run in runs for split in run.evals})
    out: dict[str, dict[str, dict[str, dict | None]]] = {}
    for split in splits:
        out[split] = {}
        for method, runs in groups.items():
            evals = [run.evals[split] for run in runs if split in run.evals]
            if evals:
                out[split][method] = {metric: pooled(evals, metric) for metric in TABLE_METRICS}
    return out


def slice_accuracy(groups: dict[str, list[Run]], split: str) -> tuple[list[str], dict[str, dict[str, float]]]:
    """(families, method -> family -> mean accuracy over runs) for one split."""
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for method, runs in groups.items():
        for run in runs:
            for family, result in run.evals.get(split, {}).get("slices", {}).items():
                if result.get("accuracy") is not None:
                    table[method][family].append(result["accuracy"])
    families = sorted({family for values in table.values() for family in values})
    return families, {m: {f: float(np.mean(v)) for f, v in fams.items()} for m, fams in table.items()}


# ---------------------------------------------------------------------------- plots


def curve_keys(runs: list[Run]) -> list[str]:
    """Logged keys worth a curve, in CURVE_PATTERNS order."""
    present = {
        key
        for run in runs
        for row in run.log
        for key, value in row.items()
        if isinstance(value, (int, float))
    }
    keys: list[str] = []
    for pattern in CURVE_PATTERNS:
        keys += sorted(k for k in present if re.fullmatch(pattern, k) and k not in keys)
    return keys


def _grid(count: int, width: float, height: float, ncols: int = 3) -> tuple[Figure, list]:
    ncols = min(ncols, count)
    nrows = -(-count // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def plot_curves(groups: dict[str, list[Run]], out: Path) -> Path | None:
    """One subplot per logged key, methods overlaid: mean over seeds, min-max band when several."""
    keys = curve_keys([run for runs in groups.values() for run in runs])
    if not keys:
        return None
    fig, axes = _grid(len(keys), 4.6, 3.0)
    colors = _colors(groups)
    for key, ax in zip(keys, axes):
        for method, runs in groups.items():
            by_step: dict[float, list[float]] = defaultdict(list)
            for run in runs:
                for row in run.log:
                    if isinstance(row.get(key), (int, float)):
                        by_step[row["step"]].append(float(row[key]))
            if not by_step:
                continue
            steps = sorted(by_step)
            mean = [np.mean(by_step[s]) for s in steps]
            ax.plot(
                steps, mean, color=colors[method], label=method, marker="o" if len(steps) < 20 else None, ms=3
            )
            if len(runs) > 1:
                ax.fill_between(
                    steps,
                    [min(by_step[s]) for s in steps],
                    [max(by_step[s]) for s in steps],
                    color=colors[method],
                    alpha=0.2,
                    linewidth=0,
                )
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles: dict[str, object] = {}  # a method may log a key that another does not: collect from every axis
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside upper center", ncols=min(6, len(handles)))
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, dpi=110, format="png")
    return out


def plot_confusions(groups: dict[str, list[Run]], split: str, out: Path) -> Path | None:
    """Row-normalised confusion matrix per method (counts summed over seeds), counts annotated."""
    mats = {}
    for method, runs in groups.items():
        evals = [run.evals[split]["confusion"] for run in runs if split in run.evals and "confusion" in run.evals[split]]
        if len({np.shape(e["matrix"]) for e in evals}) > 1:
            raise UserError(f"{method} runs: their {split} confusion matrices differ in shape (another label "
                            "scheme?); report runs of one scheme together")
        if evals:
            mats[method] = (evals[0], np.sum([e["matrix"] for e in evals], axis=0))
    if not mats:
        return None
    fig, axes = _grid(len(mats), 4.2, 3.6)
    for (method, (conf, matrix)), ax in zip(mats.items(), axes):
        rows = matrix.sum(axis=1, keepdims=True)
        share = matrix / np.where(rows == 0, 1, rows)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                f"{count}\n{share[i, j]:.0%}" if count else "0",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )
        ax.set_xticks(range(len(conf["columns"])), conf["columns"])
        ax.set_yticks(range(len(conf["labels"])), [str(c) for c in conf["labels"]])
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(f"{method} ({split})", fontsize=10)
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, dpi=110, format="png")
    return out


def plot_comparison(table: dict[str, dict[str, dict | None]], split: str, out: Path) -> Path | None:
    """Grouped bars, one group per metric, one bar per method; error bars = interval or seed spread."""
    methods = list(table)
    metrics = [m for m in TABLE_METRICS if any(table[method][m] for method in methods)]
    if not metrics:
        return None
    width_in = min(14.0, max(7.0, 1.0 + 0.45 * len(metrics) * len(methods)))
    fig = Figure(figsize=(width_in, 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(methods)
    colors = _colors({m: [] for m in methods})
    for k, method in enumerate(methods):
        stats = [table[method][m] for m in metrics]
        means = [s["mean"] if s else np.nan for s in stats]
        lower, upper = zip(*(_error(s) for s in stats))
        x = np.arange(len(metrics)) + (k - (len(methods) - 1) / 2) * width
        ax.bar(x, means, width, yerr=[lower, upper], capsize=3, label=method, color=colors[method])
    ax.set_xticks(range(len(metrics)), [m if m != "ece" else "ece (lower\nis better)" for m in metrics])
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{split}: error bars = 95% interval (one run) or std across seeds", fontsize=10)
    fig.legend(loc="outside upper center", ncols=min(6, len(methods)))
    ax.grid(axis="y", alpha=0.3)
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, dpi=110, format="png")
    return out


def _error(stat: dict | None) -> tuple[float, float]:
    if stat is None:
        return 0.0, 0.0
    if stat["spread"] is not None:
        return stat["spread"], stat["spread"]
    if stat["interval"]:
        return max(0.0, stat["mean"] - stat["interval"][0]), max(0.0, stat["interval"][1] - stat["mean"])
    return 0.0, 0.0


def _colors(groups: dict) -> dict[str, tuple]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {method: palette(i % 10) for i, method in enumerate(groups)}


# ---------------------------------------------------------------------------- documents


def build_blocks(groups: dict[str, list[Run]], out: Path) -> tuple[list[tuple], dict]:
    """The report as blocks (heading / paragraph / table / image), and the comparison for summary.json."""
    blocks: list[tuple] = [("h1", "agrl report")]
    run_rows = [
        [
            str(run.path),
            run.method,
            "–" if run.seed is None else str(run.seed),
            str(len(run.log)),
            ", ".join(run.evals) or "–",
        ]
        for runs in groups.values()
        for run in runs
    ]
    blocks.append(("table", ["run", "method", "seed", "log rows", "evaluated splits"], run_rows))
    curves = plot_curves(groups, out / "curves.png")
    if curves:
        blocks += [
            ("h2", "Training curves"),
            ("p", "Mean over seeds; the band spans min to max when a method has several runs."),
            ("img", curves, "training curves"),
        ]
    table = comparison(groups)
    for split, methods in table.items():
        blocks.append(("h2", f"Evaluation: {split}"))
        n = {m: [run.evals[split]["n"] for run in groups[m] if split in run.evals] for m in methods}
        blocks.append(
            (
                "p",
                "Cells: value [95% bootstrap interval] for one run; mean ± standard deviation across "
                "seeds for several. n per run: " + "; ".join(f"{m} {v}" for m, v in n.items()) + ".",
            )
        )
        header = ["method", *TABLE_METRICS]
        blocks.append(
            ("table", header, [[m, *(cell(s[k]) for k in TABLE_METRICS)] for m, s in methods.items()])
        )
        families, acc = slice_accuracy(groups, split)
        if families:
            blocks += [
                ("h3", f"Accuracy by query family ({split})"),
                (
                    "table",
                    ["method", *families],
                    [[m, *(f"{acc[m][f]:.3f}" if f in acc[m] else "–" for f in families)] for m in acc],
                ),
            ]
        for title, image in (
            ("Method comparison", plot_comparison(methods, split, out / f"comparison_{split}.png")),
            ("Confusion matrices", plot_confusions(groups, split, out / f"confusion_{split}.png")),
        ):
            if image:
                blocks += [("h3", f"{title} ({split})"), ("img", image, f"{title.lower()} {split}")]
    return blocks, table


def to_markdown(blocks: list[tuple], out: Path) -> str:
    lines: list[str] = []
    for kind, *body in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + body[0], ""]
        elif kind == "p":
            lines += [body[0], ""]
        elif kind == "table":
            header, rows = body
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{body[1]}]({body[0].relative_to(out)})", ""]
    return "\n".join(lines)


def to_html(blocks: list[tuple]) -> str:
    """Self-contained: images are embedded as base64 data URIs."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>agrl report</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}",
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;",
        "text-align:left;font-size:14px}th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
    ]
    for kind, *body in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{kind}>{html.escape(body[0])}</{kind}>")
        elif kind == "table":
            header, rows = body
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        elif kind == "img":
            data = base64.b64encode(body[0].read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(body[1])}' src='data:image/png;base64,{data}'>")
    return "\n".join(parts + ["</body></html>"])


def write_report(run_dirs: list[str | Path], out: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Read the runs, write OUT/report.md, OUT/report.html, OUT/summary.json and the PNGs; return the paths.
    `names`: each run's group (default: its method); runs of one name are pooled as seeds."""
    if not run_dirs:
        raise UserError("give at least one run directory")
    check_runs(run_dirs)
    out = Path(out)
    empty_dir(out, "report", force=True)  # a file, or a file above it, is refused; a report is replaced
    runs = [load_run(path) for path in run_dirs]  # every run is read before anything is written
    for run, name in zip(runs, names or ()):
        run.method = name
    out.mkdir(parents=True, exist_ok=True)
    groups = by_method(runs)
    blocks, table = build_blocks(groups, out)
    paths = {"markdown": out / "report.md", "html": out / "report.html", "summary": out / "summary.json"}
    atomic_write(paths["markdown"], to_markdown(blocks, out))
    atomic_write(paths["html"], to_html(blocks))
    atomic_write(paths["summary"], json.dumps({"runs": [str(p) for p in run_dirs], "comparison": table}, indent=2))
    return paths


def check_runs(run_dirs: list[str | Path]) -> None:
    """Refuse a run given twice (by any path): it would be pooled as two seeds."""
    seen: dict[tuple[int, int], str] = {}
    for path in map(Path, run_dirs):
        if not path.is_dir():
            raise UserError(f"{path}: not a run directory (give folders that `agrl train` / `agrl eval` wrote)")
        key = (path.stat().st_dev, path.stat().st_ino)
        if key in seen:
            raise UserError(f"{path}: the same run as {seen[key]}, given twice (it would count as two seeds)")
        seen[key] = str(path)


def columns(predictions: str | Path) -> dict:
    """`agrl eval` predictions as per-record columns in id order (pred -1: rejected by the parser)."""
    rows = sorted(map(json.loads, Path(predictions).read_text().splitlines()), key=lambda r: r["id"])
    return {"ids_sha": hashlib.sha256("\n".join(r["id"] for r in rows).encode()).hexdigest()[:16],
            "gold": [r["gold"] for r in rows], "family": [r["family"] for r in rows],
            "pred": [-1 if r["pred"] is None else r["pred"] for r in rows],
            "adheres": [None if r["adheres"] is None else int(r["adheres"]) for r in rows],
            "step_accuracy": [r["step_accuracy"] for r in rows]}


def pct_cell(stat: dict) -> str:
    """A pooled cell in percent: mean [95% interval] ±std across seeds."""
    if stat["mean"] is None:
        return "–"
    text = f"{100 * stat['mean']:.1f}"
    if stat["interval"]:
        text += f" [{100 * stat['interval'][0]:.1f}, {100 * stat['interval'][1]:.1f}]"
    return text + (f" ±{100 * stat['std']:.1f}" if stat["std"] is not None else "")


def difference_line(name: str, metric: str, d: dict) -> str:
    iv = d["interval"]
    return f"- {name}, {metric}: {100 * d['delta']:+.1f}" + (f" [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else "")


def seed_sections(groups: dict[str, dict[str, list[dict]]], scheme, resamples: int,
                  pairs: list[tuple[str, str]], metrics: tuple[str, ...] | None = None,
                  what: str = "") -> tuple[list[str], dict]:
    """Markdown per split: the pooled table (seeds and records resampled) and the paired differences.
    `groups`: split -> name -> per-seed columns."""
    from agrl.evaluation.metrics import SEED_METRICS, paired_difference, seed_table
    from agrl.core.synth import HARD

    metrics = metrics or SEED_METRICS
    lines, stats = [], {}
    for split, named in groups.items():
        stats[split] = seed_table(named, scheme, resamples, HARD, metrics)
        lines += [f"## {split}{what}: pooled over seeds", "",
                  "Cells: percent, mean over seeds [95% bootstrap interval, seeds and records resampled] ±std.", "",
                  "| run | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
        lines += [f"| {name} | {len(named[name])} | " + " | ".join(pct_cell(row[m]) for m in metrics) + " |"
                  for name, row in stats[split].items()]
        diffs = [(a, b) for a, b in pairs if a in named and b in named and len(named[a]) == len(named[b])]
        if diffs:
            lines += ["", "Paired differences (points, [95% interval]):", ""]
            for a, b in diffs:
                for metric in [m for m in ("macro_f1", "hard_macro_f1") if m in metrics]:
                    lines.append(difference_line(f"{a} - {b}", metric,
                                                 paired_difference(named[a], named[b], metric, scheme, resamples, HARD)))
        lines.append("")
    return lines, stats


def report_results(results: str | Path, out: str | Path) -> dict[str, Path]:
    """The report of an `agrl run`'s results.json: its runs (not the sweep's grid points) grouped by
    stage; then, from the eval predictions, each split's table pooled over seeds with paired differences
    (every stage against the first, or the recipe's report.differences)."""
    from agrl.data.schemes import DEFAULT, load_scheme

    body = json.loads(Path(results).read_text())
    rows = [r for r in body["runs"] if not r["sweep"] and Path(r["dir"]).is_dir()]
    paths = write_report([r["dir"] for r in rows], out, [r["stage"] for r in rows])
    groups: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        for split, result in row["evals"].items():
            if result.get("predictions") and Path(result["predictions"]).is_file():
                groups.setdefault(split, {}).setdefault(row["stage"], []).append(columns(result["predictions"]))
    if groups:
        names = list(dict.fromkeys(r["stage"] for r in rows))
        pairs = body.get("differences") or [(name, names[0]) for name in names[1:]]
        scheme = load_scheme(rows[0]["config"].get("scheme") or DEFAULT)
        lines, stats = seed_sections(groups, scheme, body.get("resamples", 1000), [tuple(p) for p in pairs])
        with paths["markdown"].open("a") as handle:
            handle.write("\n" + "\n".join(lines))
        atomic_write(Path(out) / "seeds.json", json.dumps(stats, indent=1) + "\n")
    scored: dict[str, dict[str, list[dict]]] = {}  # one-pass scores (and the baselines: one "seed" each)
    scheme_name = (rows[0]["config"].get("scheme") if rows else None) or DEFAULT
    for row in rows:
        for split, result in row.get("scores", {}).items():
            if result.get("source") and Path(result["file"]).is_file():
                cols = score_columns(result["file"], result["source"], scheme_name)
                scored.setdefault(split, {}).setdefault(row["stage"], []).append(cols)
    for kind, splits in (body.get("baselines") or {}).items():
        for split, result in splits.items():
            scored.setdefault(split, {})[f"baseline:{kind}"] = [score_columns(result["file"], result["source"], scheme_name)]
    if scored:
        from agrl.data.schemes import load_scheme

        names = list(dict.fromkeys(r["stage"] for r in rows))
        pairs = body.get("differences") or [(name, names[0]) for name in names[1:]]
        lines, stats = seed_sections(scored, load_scheme(scheme_name), body.get("resamples", 1000),
                                     [tuple(p) for p in pairs], SCORE_METRICS, " (one-pass scores)")
        with paths["markdown"].open("a") as handle:
            handle.write("\n" + "\n".join(lines))
        atomic_write(Path(out) / "scored.json", json.dumps(stats, indent=1) + "\n")
    return paths
