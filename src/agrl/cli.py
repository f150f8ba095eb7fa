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


# ---------------------------------------------------------------------------- model


@model_app.command("init")
def model_init(
    out: Path = typer.Option(..., help="output directory (HF format)"),
    size: str = typer.Option("tiny", help="tiny (~1M params), small (~12M) or base (~90M)"),
    corpus: list[Path] = typer.Option(None, help="tokenizer corpus: text files, one document per line"),
    seed: int = typer.Option(0, help="seed of the weights (and of the default synthetic corpus)"),
) -> None:
    """Build a small Llama model and its tokenizer from scratch and save them to OUT."""
    from agrl.tiny import init_model, read_corpus

    path = init_model(out, size=size, corpus=read_corpus(corpus) if corpus else None, seed=seed)
    console.print(f"model ({size}) written to {path}")
