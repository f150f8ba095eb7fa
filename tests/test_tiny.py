"""The tiny local model and tokenizer (tiny.py) and the inference helpers (models.py).

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -x -q tests/test_tiny.py
"""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from agrl.model import load as models
from agrl.core.output import SPECIAL_TAGS, Step, render
from agrl.model.tiny import SIZES, build_model, init_model

# The shipped base judge scores 0.71 macro-F1 on this check (2026-12-01); chance is 0.25.
BASE_COMMON_F1_FLOOR = 0.6


def test_format_tags_and_label_codes_are_single_tokens(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for tag in SPECIAL_TAGS:
        assert len(tok.encode(tag, add_special_tokens=False)) == 1, tag
    for code in range(10):
        ids = tok.encode(f"<label>{code}</label>", add_special_tokens=False)
        assert tok.convert_ids_to_tokens(ids) == ["<label>", str(code), "</label>"]
    # Multi-digit numbers never merge: a price of 100 is three digit tokens.
    assert tok.convert_ids_to_tokens(tok.encode("100", add_special_tokens=False)) == ["1", "0", "0"]


def test_decoding_keeps_tags_and_round_trips_text(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = render(
        2, [Step("category", "match", "Running shoes, 42"), Step("brand", "mismatch", "nike ≠ adidas")]
    )
    text += "\n  odd   spacing\ttabs é 🎉"
    ids = tok.encode(text, add_special_tokens=False)
    # TRL decodes completions with skip_special_tokens=True: the format tags must survive it.
    assert tok.decode(ids, skip_special_tokens=True) == text
    with_eos = ids + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(with_eos, skip_special_tokens=True) == text


def test_saved_model_loads_with_auto_classes_and_chat_template_opens_assistant(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tok)
    n_params = sum(p.numel() for p in model.parameters())
    assert 300_000 < n_params < 3_000_000
    messages = [{"role": "user", "content": "query: red shoes"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and "query: red shoes<|im_end|>" in prompt
    full = tok.apply_chat_template(
        messages + [{"role": "assistant", "content": "<label>4</label>"}],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    # The assistant mask covers exactly the answer and its end-of-turn token.
    masked = [i for i, m in zip(full["input_ids"], full["assistant_masks"]) if m]
    assert tok.decode(masked) == "<label>4</label><|im_end|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id


def test_generate_batches_in_input_order_and_sampling_is_seeded(tiny_model_dir):
    model, tok = models.load(tiny_model_dir, device="cpu")
    assert tok.padding_side == "left" and not model.training
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": c}], tokenize=False, add_generation_prompt=True)
        for c in ("a", "a much longer user message about running shoes", "sofa")
    ]
    batched = models.generate(model, tok, prompts, max_new_tokens=6, batch_size=2)
    alone = [models.generate(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == alone  # left padding does not change greedy output; order is kept
    sampled = models.generate(
        model, tok, prompts, max_new_tokens=6, do_sample=True, num_return_sequences=3, seed=7
    )
    assert [len(s) for s in sampled] == [3, 3, 3]
    again = models.generate(
        model, tok, prompts, max_new_tokens=6, do_sample=True, num_return_sequences=3, seed=7
    )
    assert sampled == again


def test_weights_are_deterministic_under_seed(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    a, b, c = (
        build_model(tok, "tiny", seed=3),
        build_model(tok, "tiny", seed=3),
        build_model(tok, "tiny", seed=4),
    )
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_sizes_grow():
    dims = [SIZES[s]["hidden_size"] * SIZES[s]["num_hidden_layers"] for s in ("tiny", "small", "base")]
    assert dims == sorted(dims) and len(set(dims)) == 3


def test_cli_model_init(tmp_path):
    from agrl.cli import app

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("query: red running shoes\n<label>3</label>\ncategory: match | shoes\n" * 20)
    result = CliRunner().invoke(app, ["model", "init", "--out", str(tmp_path / "m"), "--corpus", str(corpus)])
    assert result.exit_code == 0, result.output
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tok.convert_ids_to_tokens(tok.encode("<label>3", add_special_tokens=False)) == ["<label>", "3"]
    same = init_model(tmp_path / "m2", corpus=corpus.read_text().splitlines())
    assert (same / "tokenizer.json").read_text() == (tmp_path / "m" / "tokenizer.json").read_text()


def test_default_corpus_tokenizer_is_compact_on_the_synthetic_benchmark(tiny_model_dir):
    from agrl.core.prompt import prompt_text
    from agrl.core.synth import generate

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = generate(seed=0)["eval_wild"][:50]
    texts = [prompt_text(r, tok) for r in records]
    tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
    # Word-level merges learnt from our own prompts: far fewer tokens than characters.
    assert len(tok) <= SIZES["tiny"]["vocab"] + 8 and tokens < 0.35 * sum(map(len, texts))


def test_tokenizer_round_trips_every_prompt_and_reasoning_of_a_benchmark(tiny_model_dir):
    """decode(encode(x)) == x, exactly, for every prompt (plain and guided) and every reasoning the project
    writes for a benchmark the tokenizer was not trained on; TRL's decode (skip_special_tokens) keeps the tags."""
    from agrl.core.prompt import prompt_text
    from agrl.core.rules import RulesEngine
    from agrl.core.synth import generate

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = [r for split in generate(seed=7).values() for r in split]
    engine = RulesEngine.from_records(records)
    prompts = [prompt_text(r, tok) for r in records]
    prompts += [prompt_text(r, tok, guidance=engine.guidance(r, 1 + i % 3)) for i, r in enumerate(records[:500])]
    targets = [engine.teacher_reasoning(r) for r in records] + [r.extra["reasoning"] for r in records
                                                                  if "reasoning" in r.extra]
    for text, ids in zip(prompts, tok(prompts, add_special_tokens=False)["input_ids"]):
        assert tok.decode(ids) == text
    for text, ids in zip(targets, tok(targets, add_special_tokens=False)["input_ids"]):
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert tok.convert_ids_to_tokens(ids[:3]) == ["<label>", text[7], "</label>"]


def test_catalog_words_are_one_token_wherever_they_stand(tiny_model_dir):
    """Each word of the catalog (brands, models, attribute values, category nouns) is one token after a
    space, and a product's attribute values appear in its prompt as those same tokens (as in queries)."""
    from agrl.core.catalog import catalog
    from agrl.core.prompt import prompt_text
    from agrl.core.synth import generate

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = set()
    for info in catalog()["categories"].values():
        phrases = [info["noun"], *info["brands"], *(m for ms in info["brands"].values() for m in ms)]
        phrases += [v for values in info["attributes"].values() for v in values]
        words |= {w for phrase in phrases for w in phrase.split() if w.isalpha()}
    pieces = {w: tok.tokenize(" " + w) for w in sorted(words)}
    assert {w: p for w, p in pieces.items() if len(p) != 1} == {}
    for record in generate(seed=7)["eval_wild"][:200]:
        ids = set(tok(prompt_text(record, tok), add_special_tokens=False)["input_ids"])
        for value in record.product.attributes.values():
            if value.isalpha():
                assert tok.convert_tokens_to_ids(pieces.get(value, tok.tokenize(" " + value)))[0] in ids, value


def test_shipped_base_judge_reads_common_queries(tmp_path):
    """The shipped base judge (src/agrl/judges/tiny-base, built by `agrl demo --recipe base`) copies out as a
    model directory and reads the common families of a benchmark it never saw (label posterior, ~5 s)."""
    from agrl.evaluation.metrics import macro_f1
    from agrl.model.score import Scorer
    from agrl.core.synth import COMMON_MIX, generate
    from agrl.model.tiny import copy_base_judge

    model = copy_base_judge("tiny-base", tmp_path / "base")
    assert AutoTokenizer.from_pretrained(model).convert_tokens_to_ids("<label>") is not None
    records = [r for r in generate(seed=11, sizes={"eval_wild": 600})["eval_wild"] if r.family in COMMON_MIX]
    predicted = [result.label for result in Scorer(model, batch_size=64).score(records)]
    assert macro_f1([r.label for r in records], predicted, [1, 2, 3, 4]) > BASE_COMMON_F1_FLOOR
