"""Shared fixtures. Tests never reach a model hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama model + tokenizer in HF format (tokenizer from the synthetic benchmark), once per session."""
    from agrl.tiny import init_model

    return init_model(tmp_path_factory.mktemp("tiny_model"), size="tiny", seed=0)
