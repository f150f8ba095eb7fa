"""The `agrl` command line: data, model, train, eval, report, score, serve, demo.

Each command parses its options and calls one library function; no logic lives here.

    agrl data validate pairs.jsonl
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LLM relevance judges trained with AGRL.")
data_app = typer.Typer(no_args_is_help=True, help="Validate, label and synthesise relevance data.")
model_app = typer.Typer(no_args_is_help=True, help="Build local models.")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
console = Console(stderr=True)


# ---------------------------------------------------------------------------- data


@data_app.command("validate")
def data_validate(
    file: str = typer.Argument(..., help="JSONL, CSV, Parquet file or hf:NAME"),
    scheme: str = typer.Option("default", help="label scheme: built-in name or YAML file"),
) -> None:
    """Report every bad row as FILE:LINE: field: message; exit 1 if there is any."""
    from agrl.data import read_records
    from agrl.schemes import load_scheme

    records, bad = read_records(file, load_scheme(scheme))
    for row in bad:
        typer.echo(str(row))
    console.print(f"{file}: {len(records)} good row(s), {len(bad)} bad row(s)")
    raise typer.Exit(1 if bad else 0)
