"""A small local causal LM and its tokenizer, built from scratch (tests, the CPU demo, the GPU check).

The tokenizer is a byte-level BPE trained on our own prompts and teacher reasoning, its vocabulary
(2048) large enough that every word of the synthetic catalog is one token after a space, wherever it
stands (the prompt writes attribute values as "name: value" for that); digits are split one by one
(each label code is a single token) and the format tags `<label> </label> <think> </think>` are
single added tokens that decoding keeps. The model is a LlamaForCausalLM sized `tiny` (~1M params),
`small` (~12M) or `base` (~90M), saved in HF format.

A base judge ships with the package (judges/tiny-base, built by `agrl demo --recipe base`): the tiny
model after SFT on plentiful common-family pairs, the stand-in for a pretrained model that the demo
and users start from.

    path = init_model("runs/tiny", size="tiny", seed=0)   # or: agrl model init --out runs/tiny
    path = copy_base_judge("tiny-base", "runs/demo/model")
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from agrl.errors import UserError
from agrl.core.output import SPECIAL_TAGS

BOS, EOS, PAD, UNK = "<|im_start|>", "<|im_end|>", "<|pad|>", "<|unk|>"

# Qwen-style turns. `{% generation %}` marks assistant text so TRL can mask the loss to it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SIZES: dict[str, dict[str, int]] = {
    # name: (hidden, layers, heads, mlp, vocab)
    name: dict(
        zip(("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab"), dims)
    )
    for name, dims in {
        "tiny": (128, 4, 4, 256, 2048),
        "small": (384, 6, 6, 1024, 2048),
        "base": (768, 12, 12, 2048, 3072),
    }.items()
}
MAX_POSITIONS = 2048


def default_corpus(seed: int = 0) -> list[str]:
    """Text of the synthetic benchmark: every prompt and every teacher reasoning (sft split)."""
    from agrl.core.prompt import user_message
    from agrl.core.rules import RulesEngine
    from agrl.core.synth import generate

    splits = generate(seed=seed)
    records = [r for rows in splits.values() for r in rows]
    engine = RulesEngine.from_records(records)
    texts = [user_message(r) for r in records]
    texts += [engine.teacher_reasoning(r) for r in records]
    texts += [r.extra["reasoning"] for r in splits["sft"] if "reasoning" in r.extra]
    return texts


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 1024):
    """A PreTrainedTokenizerFast: byte-level BPE, single-digit tokens, format tags as added tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    # Digits first so no number (and no label code) is ever merged into a multi-digit token.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, BOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # Not "special": skip_special_tokens=True (TRL's decode) must keep the tags in the text.
    tok.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in SPECIAL_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer, size: str = "tiny", seed: int = 0):
    """A randomly initialised LlamaForCausalLM for this tokenizer; the same seed gives the same weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r} (choose from {sorted(SIZES)})")
    dims = {k: v for k, v in SIZES[size].items() if k != "vocab"}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **dims,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = judge_generation_config(tokenizer)
    return model


def judge_generation_config(tokenizer):
    """Greedy, up to 160 new tokens, stopping at the tokenizer's end of turn: what every judge we save uses."""
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=160)


def init_model(
    out_dir: str | Path, size: str = "tiny", corpus: Iterable[str] | None = None, seed: int = 0
) -> Path:
    """Build tokenizer + model and save both in HF format under `out_dir`; returns the directory."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r} (choose from {sorted(SIZES)})")
    texts = list(corpus) if corpus is not None else default_corpus(seed)
    if not texts:
        raise ValueError("tokenizer corpus is empty")
    tokenizer = build_tokenizer(texts, vocab_size=SIZES[size]["vocab"])
    model = build_model(tokenizer, size, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def base_judge_dir(name: str) -> Path:
    """A base judge shipped with agrl (src/agrl/judges/NAME): built by `agrl demo --recipe base`."""
    path = Path(str(resources.files("agrl") / "judges" / name))
    if not (path / "model.safetensors").is_file():
        shipped = sorted(p.name for p in path.parent.iterdir() if p.is_dir()) if path.parent.is_dir() else []
        raise ValueError(f"{name}: no such base judge (shipped: {shipped})")
    return path


def copy_base_judge(name: str, out_dir: str | Path) -> Path:
    """Copy a shipped base judge (weights + tokenizer, HF format) to `out_dir`, as `init_model` would write one."""
    out = Path(out_dir)
    shutil.copytree(base_judge_dir(name), out, dirs_exist_ok=True)
    return out


def read_corpus(files: Iterable[str | Path]) -> list[str]:
    """Corpus files: plain text, one document per line (JSONL lines are used as text too)."""
    texts: list[str] = []
    for file in files:
        data = Path(file).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data.count(b"\n", 0, err.start) + 1
            raise UserError(f"--corpus {file}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); "
                            "save the corpus as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
        texts += [line for line in text.splitlines() if line.strip()]
    return texts


def init_model_dir(out: str | Path, size: str, corpus: list[str] | None, seed: int, force: bool) -> Path:
    """`agrl model init`: the corpus files checked and read, OUT empty (or --force), then the model written
    whole (the old OUT stays until the new model is complete)."""
    from agrl.files import atomic_dir, empty_dir, input_file

    files = [input_file(path, "corpus") for path in corpus or []]
    empty_dir(out, "model", force)
    texts = read_corpus(files) if files else None
    if files and not texts:
        raise UserError(f"--corpus {', '.join(map(str, files))}: no text lines to build a tokenizer from")
    with atomic_dir(out) as tmp:
        init_model(tmp, size=size, corpus=texts, seed=seed)
    return Path(out)
