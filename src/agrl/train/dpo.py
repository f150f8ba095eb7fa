"""Stage 2, the DPO baseline (TaoSR1's recipe): mine preference pairs by pass@N sampling, then DPO.

For each training prompt the SFT model samples N completions, each parsed and judged. chosen = a
correct, rule-adherent sample ("self-correction" pair); where none is, chosen = the rendered gold
reasoning ("oracle" pair); rejected = a wrong sample (wrong label or rejected by the parser).
Prompts with no wrong sample give no pair. Pairs go to output_dir/pairs.jsonl, their counts to
pairs_summary.json and a step-0 row of metrics.jsonl (a resumed run reuses the pairs); then TRL's
DPOTrainer trains on them.

    agrl train dpo
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from agrl.model import load as models
from agrl.data.records import Record
from agrl.core.prompt import prompt_messages, prompt_text
from agrl.core.rewards import grade
from agrl.core.rules import RulesEngine
from agrl.data.schemes import Scheme
from agrl.train.args import RunArgs
from agrl.train.common import METRICS_FILE, fit, setup
from agrl.train.lora import starting_model

log = logging.getLogger("agrl.train")


def pick_pair(
    record: Record, samples: list[str], engine: RulesEngine, scheme: Scheme
) -> tuple[str, str, str] | None:
    """(kind, chosen, rejected) for one prompt's samples; None when no sample is wrong."""
    good, wrong = [], []
    for text in samples:
        graded = grade(text, record.label, scheme, engine.table)
        if not graded.correct:
            wrong.append(text)
        elif graded.adheres:
            good.append(text)
    if not wrong:
        return None
    if good:
        return "self_correction", good[0], wrong[0]
    return "oracle", engine.teacher_reasoning(record), wrong[0]


def mine_pairs(
    run: RunArgs, args: DPOConfig, records: list[Record], engine: RulesEngine, scheme: Scheme
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """pass@N samples from the starting model -> DPO rows (conversational) and pair counts."""
    model, tokenizer = models.load(run.model)
    prompts = [prompt_text(record, tokenizer) for record in records]
    samples = models.generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=run.dpo_max_new_tokens,
        num_return_sequences=run.dpo_samples,
        do_sample=True,
        temperature=run.dpo_temperature,
        seed=args.seed,
    )
    del model
    rows, counts = [], Counter({"self_correction": 0, "oracle": 0, "no_wrong_sample": 0})
    for record, texts in zip(records, samples, strict=True):
        pair = pick_pair(record, texts, engine, scheme)
        if pair is None:
            counts["no_wrong_sample"] += 1
            continue
        kind, chosen, rejected = pair
        counts[kind] += 1
        rows.append(
            {
                "id": record.id,
                "kind": kind,
                "prompt": prompt_messages(record),
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return rows, dict(counts | {"prompts": len(records), "samples_per_prompt": run.dpo_samples})


def load_or_mine(run: RunArgs, args: DPOConfig) -> list[dict[str, Any]]:
    out = Path(args.output_dir)
    pairs_path, summary_path = out / "pairs.jsonl", out / "pairs_summary.json"
    if pairs_path.exists() and summary_path.exists():  # a resumed run trains on the same pairs
        return [json.loads(line) for line in pairs_path.read_text().splitlines() if line.strip()]
    scheme, records, engine = setup(run)
    rows, counts = mine_pairs(run, args, records, engine, scheme)
    log.warning("dpo pairs: %s", counts)
    if args.process_index == 0:
        out.mkdir(parents=True, exist_ok=True)
        pairs_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        summary_path.write_text(json.dumps(counts, indent=2))
        row = {"step": 0} | {f"dpo_pairs/{kind}": n for kind, n in counts.items()}
        with (out / METRICS_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
    return rows


def main(run: RunArgs, args: DPOConfig, callbacks: tuple = ()) -> None:
    rows = load_or_mine(run, args)
    if not rows:
        raise ValueError(
            "dpo: no preference pairs (every sample was right); sample more (dpo_samples) or hotter"
        )
    dataset = Dataset.from_list([{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows])
    model, peft_config = starting_model(run, args)
    # With an adapter, TRL's reference is the model with the new adapter off, or a frozen copy of a
    # continued one: no second model in memory either way.
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, peft_config=peft_config)
    fit(trainer, run, args, callbacks)
