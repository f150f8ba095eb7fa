"""`agrl sbs create|serve|report|export`: the side-by-side study commands (registered in agrl/cli.py).

Each checks its options, then calls one function of study.py, app.py, report.py or export.py; a UserError is the
root command's one-line error and exit code 2.

    agrl sbs create --a A.json --b B.json --pairs pairs.jsonl --out study.sqlite --sample 50
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from agrl.errors import UserError

sbs_app = typer.Typer(no_args_is_help=True, help="Side-by-side evaluation of two judges by people (a web page).")
console = Console(stderr=True)
JUDGE_HELP = ("the judge's outputs on the pairs: an `agrl eval` JSON (or its predictions JSONL), an `agrl score` "
              "JSONL, or a model directory (scored here: label and score, no reasoning)")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@sbs_app.command("create")
def create(
    a: Annotated[str, typer.Option("--a", help=f"judge A (the current one): {JUDGE_HELP}")],
    b: Annotated[str, typer.Option("--b", help=f"judge B (the candidate): {JUDGE_HELP}")],
    pairs: Annotated[str, typer.Option(help="the query-product pairs both judges ran on (JSONL/CSV/Parquet)")],
    out: Annotated[str, typer.Option(help="the study file to write (SQLite)")],
    sample: Annotated[int | None, typer.Option(help="items to draw (default: every pair kept)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the sampling and the left/right order")] = 0,
    stratify: Annotated[str | None, typer.Option(help="sample in proportion to: family, query or disagreement")] = None,
    agreed: Annotated[str, typer.Option(help="pairs both judges label the same: keep, skip or down-weight")] = "keep",
    agreed_weight: Annotated[float, typer.Option(help="down-weight: keep an agreed pair with this "
                                                 "probability; it then counts 1/weight")] = 0.25,
    raters_per_item: Annotated[int, typer.Option(help="how many raters are asked each item (k)")] = 1,
    scheme: Annotated[str | None, typer.Option(
        help="label scheme: default, esci, three_level or a YAML file (default: the one the pairs' manifest.json names, else default)")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing study file")] = False,
    gold: Annotated[str | None, typer.Option(
        help="gold items: JSONL rows with the id of a pair in --pairs and its known answer: better "
             "(a, b, both_good, both_bad) and/or label; shown unmarked to every rater")] = None,
    gold_share: Annotated[float, typer.Option(help="the share of the items that are gold, in (0, 1)")] = 0.1,
    show: Annotated[str | None, typer.Option(
        help="the product fields raters see, comma-separated, in order (e.g. title,brand,attributes); "
             "default: every field but identifiers (id, *_id, *_uid)")] = None,
) -> None:
    """A study from two judges' outputs over the same pairs."""
    from agrl.sbs.study import create as create_study

    fields = [name.strip() for name in show.split(",") if name.strip()] if show is not None else None
    counts = create_study(a, b, pairs, out, sample=sample, seed=seed, stratify=stratify, agreed=agreed,
                          agreed_weight=agreed_weight, raters_per_item=raters_per_item, scheme=scheme, force=force,
                          gold=gold, gold_share=gold_share, show=fields)
    console.print(f"{out}: {counts['items']} items ({counts['gold']} gold) from {counts['pairs']} pairs "
                  f"({counts['agreed']} with the same label from both judges)", soft_wrap=True)


@sbs_app.command("serve")
def serve(
    study: Annotated[str, typer.Argument(help="the study file (`agrl sbs create`)")],
    rater: Annotated[list[str] | None, typer.Option(
        help="add a rater (repeat the option for several); each rater and the lead get a link with a token")] = None,
    host: Annotated[str, typer.Option(help="address to listen on; other than this machine needs --public")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 1-65535")] = 8080,
    public: Annotated[bool, typer.Option(help="allow a --host other machines can reach")] = False,
    min_gold_accuracy: Annotated[float | None, typer.Option(
        help="leave raters whose accuracy on gold items is below this out of the results page")] = None,
) -> None:
    """The rating page and the lead's results and adjudication (a link per rater, one for the lead)."""
    from agrl.sbs.app import serve as run_page
    from agrl.sbs.store import LEAD, Study

    if not 0 < port < 65536:
        raise UserError(f"--port {port}: must be 1-65535")
    if host not in LOCAL_HOSTS and not public:
        raise UserError(f"--host {host}: other machines could reach the page; pass --public to allow it")
    _fraction(min_gold_accuracy, "--min-gold-accuracy")
    tokens = Study(study).add_raters(rater or [])  # refuse a file that is not a study before binding the port
    base = f"http://{'127.0.0.1' if host in LOCAL_HOSTS else host}:{port}/"
    if host not in LOCAL_HOSTS:
        console.print(f"warning: listening on {host} over plain HTTP: a token can be read on the network; "
                      "use it on a trusted network or behind an HTTPS proxy")
    console.print("links (each person their own; the study file holds the tokens, keep it private):")
    for name, token in tokens.items():
        console.print(f"  {'lead (results, adjudication, export)' if name == LEAD else name}: {base}#token={token}",
                      soft_wrap=True, highlight=False)
    if len(tokens) == 1:
        console.print("  no raters yet: add them with --rater NAME (repeatable)")
    console.print("(Ctrl-C to stop)")
    run_page(study, host, port, min_gold_accuracy)


def _fraction(value: float | None, option: str) -> None:
    if value is not None and not 0 <= value <= 1:
        raise UserError(f"{option} {value}: must be in [0, 1]")


@sbs_app.command("report")
def report(
    study: Annotated[str, typer.Argument(help="the study file")],
    out: Annotated[str | None, typer.Option(help="folder for sbs.md/.html/.json (a run's report folder "
                                            "links it); default: STUDY without .sqlite + _report")] = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    format: Annotated[str, typer.Option(help="what to print: markdown, or json (the summary, for machines)")] = "markdown",
    min_items: Annotated[int, typer.Option(help="no interval below this many items (it would overclaim)")] = 10,
    min_gold_accuracy: Annotated[float | None, typer.Option(
        help="leave raters whose accuracy on gold items is below this out of every number (reported)")] = None,
) -> None:
    """Win rate and GSB of B over A with intervals, per stratum, rater agreement and gold accuracy, judges
    against raters."""
    import json
    from pathlib import Path

    from agrl.files import positive
    from agrl.sbs.report import write_report

    positive(resamples, "--resamples")
    positive(min_items, "--min-items")
    _fraction(min_gold_accuracy, "--min-gold-accuracy")
    if format not in ("markdown", "json"):
        raise UserError(f"--format {format}: must be markdown or json")
    out = out or str(Path(study).with_suffix("")) + "_report"
    result = write_report(study, out, resamples=resamples, seed=seed, min_items=min_items,
                          min_gold_accuracy=min_gold_accuracy)
    typer.echo(json.dumps(result["summary"], indent=2) if format == "json" else result["markdown"])
    console.print(f"wrote {', '.join(str(p) for p in result['paths'].values())}")


@sbs_app.command("export")
def export(
    study: Annotated[str, typer.Argument(help="the study file")],
    out: Annotated[str, typer.Option(help="the file to write: .jsonl or .csv (every answer, one row each)")],
    format: Annotated[str | None, typer.Option(help="jsonl or csv (default: from --out's suffix)")] = None,
) -> None:
    """Every answer: study, item, rater, side shown left, choice, label, comment, latency, gold, time."""
    from agrl.sbs.export import write_export

    count = write_export(study, out, format)
    console.print(f"wrote {out}: {count} answers", soft_wrap=True)
