"""Stage 1, SFT on chain-of-thought data: prompt -> rendered reasoning, with TRL's SFTTrainer.

Each row is conversational prompt-completion: the prompt is `prompt.prompt_messages(record)`, the
completion the record's `reasoning` (teacher text, possibly noisy, as sft.jsonl carries it) or else
the rules engine's rendering of the gold verdicts. The loss covers the completion only.
Departures from `trl sft`: none; the dataset is built here from records.

    agrl train configs/sft.yaml
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from agrl.data import Record
from agrl.prompt import prompt_messages
from agrl.rules import RulesEngine
from agrl.train.common import fit, setup
from agrl.train.config import RunArgs


def sft_rows(records: list[Record], engine: RulesEngine) -> list[dict[str, Any]]:
    """Prompt-completion rows: the record's own `reasoning` when it has one, else the gold rendering."""
    rows = []
    for record in records:
        target = record.extra.get("reasoning") or engine.teacher_reasoning(record)
        rows.append(
            {
                "prompt": prompt_messages(record),
                "completion": [{"role": "assistant", "content": target}],
            }
        )
    return rows


def main(run: RunArgs, args: SFTConfig) -> None:
    _, records, engine = setup(run)
    if args.completion_only_loss is False:
        raise ValueError("sft: completion_only_loss must stay on (the loss is on the reasoning only)")
    trainer = SFTTrainer(
        model=run.model, args=args, train_dataset=Dataset.from_list(sft_rows(records, engine))
    )
    fit(trainer, run, args)
