"""Named pure formatting functions for the tasks a format string cannot express.

Each preprocessor takes one record (a dict with the task's canonical keys) and returns a new
record; `TaskSpec.source_format` is then applied to it. They follow the T5 / ATTEMPT / DePT
preprocessors (DePT `src/tasks.py`), with their known bugs fixed (see docs/tasks.md):

- `wsc`: span1 wrapped in `* ... *`, the pronoun (span2) in `# ... #` (T5 `wsc_simple` style).
- `multirc`: `<br>` becomes a space, `<b>`/`</b>` are removed (ATTEMPT `remove_markup`).
- `mrqa`: T5's `pad_punctuation` on question, context and every answer.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Callable

from ept.registry import Registry

Record = dict[str, Any]
PREPROCESSORS: Registry[Callable[[Record], Record]] = Registry("preprocessor")


def mark_span(words: list[str], span: str, index: int, mark: str) -> list[str]:
    """Wrap the words of `span` starting at word `index` as `mark span mark`.

    `index` counts whitespace-separated words, as SuperGLUE WSC's span indices do. Where the
    index is off (a handful of SuperGLUE WSC rows, fixed upstream in `wsc.fixed`), the nearest
    occurrence of the span is marked instead; a span that does not occur is left unmarked.
    The span may end inside a word ("him." for span "him"): the tail stays outside the marks.
    Marked words are re-joined with single spaces (T5 / DePT keep the original whitespace).
    """
    span_words = span.split()
    n = len(span_words)
    if n == 0:
        return words

    def matches(i: int) -> bool:
        if i < 0 or i + n > len(words):
            return False
        head = words[i:i + n]
        if [w.lower() for w in head[:-1]] != [w.lower() for w in span_words[:-1]]:
            return False
        return head[-1].lower().startswith(span_words[-1].lower())

    candidates = [i for i in range(len(words)) if matches(i)]
    if not candidates:
        return words
    start = min(candidates, key=lambda i: (abs(i - index), i))
    last = words[start + n - 1]
    tail = last[len(span_words[-1]):]
    # "him." -> "# him #." : the tail sticks to the closing mark, as DePT's regex leaves it
    marked = [mark, *words[start:start + n - 1], last[:len(span_words[-1])], mark + tail]
    return words[:start] + marked + words[start + n:]


def wsc(record: Record) -> Record:
    """T5-style WSC text: `* span1 *` and `# span2 #` marked in place (word indices)."""
    words = str(record["text"]).split()
    i1, i2 = int(record["span1_index"]), int(record["span2_index"])
    words = mark_span(words, str(record["span1_text"]), i1, "*")
    # Marking span1 adds 2 words before span2 when it comes first (DePT / T5 shift).
    words = mark_span(words, str(record["span2_text"]), i2 + 2 * int(i1 < i2), "#")
    return {**record, "text": " ".join(words)}


def remove_markup(text: str) -> str:
    return re.sub(r"</?b>", "", text.replace("<br>", " "))


def multirc(record: Record) -> Record:
    return {**record, **{k: remove_markup(str(record[k])) for k in ("paragraph", "question", "answer")}}


def pad_punctuation(text: str) -> str:
    """T5's `_pad_punctuation`: spaces around every char that is not a letter, digit, mark,
    underscore or whitespace, then whitespace collapsed."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        keep = ch.isspace() or ch == "_" or cat[0] in ("L", "N", "M")
        out.append(ch if keep else f" {ch} ")
    return " ".join("".join(out).split())


def mrqa(record: Record) -> Record:
    label = record["label"]
    answers = tuple(pad_punctuation(a) for a in label) if isinstance(label, (list, tuple)) else label
    return {**record, "question": pad_punctuation(str(record["question"])),
            "context": pad_punctuation(str(record["context"])), "label": answers}


def mark_word(sentence: str, word: str) -> str:
    """WiC: wrap the first word of `sentence` that starts with the target lemma's stem in quotes
    ("bank" -> `the "banks" of`); when no word matches (irregular forms), append ` (word)`."""
    words, stem = sentence.split(), word.lower()[: max(3, len(word) - 2)]
    for i, w in enumerate(words):
        lead, core, tail = re.match(r"^(\W*)(.*?)(\W*)$", w).groups()  # punctuation stays outside the marks
        if core.lower().startswith(stem):
            return " ".join(words[:i] + [f'{lead}"{core}"{tail}'] + words[i + 1:])
    return f"{sentence} ({word})"


def wic_sides(fields) -> tuple[str, str]:
    s1, s2, word = fields
    return mark_word(s1, word), mark_word(s2, word)


# Tasks whose two sides (siamese pair scoring) are not simply their two text fields:
# task name -> fields -> (side A, side B). Each key is in `ept.tasks.spec.PAIR_TASKS_BY_NAME`.
PAIR_SIDES: dict[str, Callable[[tuple], tuple[str, str]]] = {"wic": wic_sides}

PREPROCESSORS.register("wsc", wsc)
PREPROCESSORS.register("multirc", multirc)
PREPROCESSORS.register("mrqa", mrqa)
