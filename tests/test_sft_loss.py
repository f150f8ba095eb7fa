"""The SFT loss with a weighted label token (train/sft.py `label_weighted_loss`): weight 1 is the plain
token mean TRL computes; weight w adds (w - 1) times the label token's loss. Pure torch, milliseconds."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from agrl.train.sft import label_weighted_loss

LABEL_OPEN = 5


@pytest.fixture
def batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 9)
    labels = torch.tensor([[-100, -100, LABEL_OPEN, 3, 7, 1], [-100, LABEL_OPEN, 2, 8, 4, -100]])
    return SimpleNamespace(logits=logits), labels


def token_losses(logits, labels):
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")


def test_weight_one_is_the_token_mean(batch):
    outputs, labels = batch
    plain = F.cross_entropy(outputs.logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(label_weighted_loss(LABEL_OPEN, 1.0)(outputs, labels), plain)


def test_label_token_counts_weight_times(batch):
    outputs, labels = batch
    per_token = token_losses(outputs.logits, labels)
    label_positions = labels[:, :-1] == LABEL_OPEN  # predicting the code right after <label>
    count = (labels[:, 1:] != -100).sum()
    expected = (per_token.sum() + 9.0 * per_token[label_positions].sum()) / count
    assert torch.allclose(label_weighted_loss(LABEL_OPEN, 10.0)(outputs, labels), expected)
    # The Trainer's token count across the whole accumulated batch is the denominator when given.
    assert torch.allclose(label_weighted_loss(LABEL_OPEN, 10.0)(outputs, labels, num_items_in_batch=20),
                          expected * count / 20)


def test_a_tag_split_into_several_tokens_marks_the_token_after_all_of_them(batch):
    """SmolLM2's tokenizer writes `<label>` as `<`, `label`, `>`: the code after the whole sequence is
    weighted, and a lone `>` (another tag's end) or a partial sequence is not."""
    outputs, _ = batch
    lt, word, gt = 5, 6, 7
    labels = torch.tensor([[-100, lt, word, gt, 3, 1], [-100, word, gt, 2, lt, word]])
    per_token = token_losses(outputs.logits, labels)
    count = (labels[:, 1:] != -100).sum()
    expected = (per_token.sum() + 9.0 * per_token[0, 3]) / count  # only row 0, predicting the 3
    assert torch.allclose(label_weighted_loss([lt, word, gt], 10.0)(outputs, labels), expected)
    assert torch.allclose(label_weighted_loss([lt, word, gt], 1.0)(outputs, labels), per_token.sum() / count)
