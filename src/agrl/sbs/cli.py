"""`agrl sbs create|serve|report`: the side-by-side study commands (registered in agrl/cli.py).

Each checks its options, then calls one function of study.py, app.py or report.py; a UserError is the
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
) -> None:
    """A study from two judges' outputs over the same pairs."""
    from agrl.sbs.study import create as create_study

    counts = create_study(a, b, pairs, out, sample=sample, seed=seed, stratify=stratify, agreed=agreed,
                          agreed_weight=agreed_weight, raters_per_item=raters_per_item, scheme=scheme, force=force)
    console.print(f"{out}: {counts['items']} items from {counts['pairs']} pairs "
                  f"({counts['agreed']} with the same label from both judges)", soft_wrap=True)


@sbs_app.command("serve")
def serve(
    study: Annotated[str, typer.Argument(help="the study file (`agrl sbs create`)")],
    host: Annotated[str, typer.Option(help="address to listen on; other than this machine needs --public")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 1-65535")] = 8080,
    public: Annotated[bool, typer.Option(help="allow a --host other machines can reach")] = False,
) -> None:
    """The rating page (and results page, /results) for a study."""
    from agrl.sbs.app import serve as run_page
    from agrl.sbs.store import Study

    if not 0 < port < 65536:
        raise UserError(f"--port {port}: must be 1-65535")
    if host not in LOCAL_HOSTS and not public:
        raise UserError(f"--host {host}: other machines could reach the page; pass --public to allow it")
    Study(study)  # refuse a file that is not a study before binding the port
    if host not in LOCAL_HOSTS:
        console.print(f"warning: listening on {host}: anyone who can reach this machine can rate and read "
                      "the results (no login)")
    console.print(f"rating page: http://{'127.0.0.1' if host in LOCAL_HOSTS else host}:{port}/  "
                  f"results: /results  (Ctrl-C to stop)")
    run_page(study, host, port)


@sbs_app.command("report")
def report(
    study: Annotated[str, typer.Argument(help="the study file")],
    out: Annotated[str | None, typer.Option(help="folder for sbs.md/.html/.json (a run's report folder "
                                            "links it); default: STUDY without .sqlite + _report")] = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
) -> None:
    """Win rate of B over A with its interval, per stratum, rater agreement, judges against raters."""
    from pathlib import Path

    from agrl.files import positive
    from agrl.sbs.report import write_report

    positive(resamples, "--resamples")
    out = out or str(Path(study).with_suffix("")) + "_report"
    result = write_report(study, out, resamples=resamples, seed=seed)
    typer.echo(result["markdown"])
    console.print(f"wrote {', '.join(str(p) for p in result['paths'].values())}")
