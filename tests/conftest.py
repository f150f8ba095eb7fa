"""Shared fixtures. Tests never reach a model hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest


def _tiny_corpus() -> list[str]:
    """Prompts and rendered reasoning for a few pairs: enough text for the tiny tokenizer."""
    from agrl.data import Product, Record
    from agrl.output import Step, render
    from agrl.prompt import user_message

    products = [
        Product("Nike Pegasus 40 Running Shoe, Red", "Shoes > Running", "nike", {"color": "red"}, 89.0),
        Product("Adidas Ultraboost Running Shoe", "Shoes > Running", "adidas", {"color": "black"}, 120.0),
        Product("Wooden Shoe Rack, 3 Tiers", "Home > Storage", "ikea", {"material": "wood"}, 35.5),
        Product("iPhone 14 Silicone Case", "Phones > Cases", "apple", {"model": "iphone 14"}, 19.0),
    ]
    queries = ["red nike running shoes under 100", "shoe rack without drawers", "iphone 15 case", "sofa"]
    texts = [user_message(Record(q, p)) for q in queries for p in products]
    steps = [Step("category", "match", "running shoes"), Step("brand", "mismatch", "nike vs adidas"),
             Step("attribute.color", "unknown"), Step("negation", "respected"), Step("price", "n/a")]
    texts += [render(label, steps[:k], "a stated constraint is violated") for label in (1, 2, 3, 4) for k in (1, 3, 5)]
    return texts * 4


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama model + tokenizer in HF format, built once per test session."""
    from agrl.tiny import init_model

    return init_model(tmp_path_factory.mktemp("tiny_model"), size="tiny", corpus=_tiny_corpus(), seed=0)
