"""The judge's prompt for a record: chat messages, or plain text for models without a chat template.

Guidance (Adaptive Guided Replay, spec section 6) is appended to the same user message, so a guided
prompt differs from the unguided one only by its trailing guidance lines.

    messages = prompt_messages(record); text = prompt_text(record, tokenizer)
"""

from __future__ import annotations

from agrl.data.records import Product, Record

INSTRUCTION = "judge the relevance of the product to the query. answer the label first, then the rules."


def describe_product(product: Product) -> str:
    lines = [f"title: {product.title}"]
    if product.category:
        lines.append(f"category: {product.category}")
    if product.brand:
        lines.append(f"brand: {product.brand}")
    if product.attributes:
        # "name: value", so a value is the same token (" steel") here as in the query and the title.
        lines.append("attributes: " + "; ".join(f"{k}: {v}" for k, v in sorted(product.attributes.items())))
    if product.price is not None:
        lines.append(f"price: {product.price:g}")
    if product.description:
        lines.append(f"description: {product.description}")
    return "\n".join(lines)


def user_message(record: Record, guidance: str | None = None) -> str:
    text = f"{INSTRUCTION}\nquery: {record.query}\n{describe_product(record.product)}"
    if guidance:
        text += f"\nguidance: {guidance}"
    return text


def prompt_messages(record: Record, guidance: str | None = None) -> list[dict[str, str]]:
    """Conversational prompt (TRL's format): one user turn."""
    return [{"role": "user", "content": user_message(record, guidance)}]


def prompt_text(record: Record, tokenizer=None, guidance: str | None = None) -> str:
    """The prompt as text, ready for generation (the assistant turn opened)."""
    messages = prompt_messages(record, guidance)
    if tokenizer is not None and tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_prompt(messages)


def plain_prompt(messages: list[dict[str, str]]) -> str:
    """Fallback for models without a chat template."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
