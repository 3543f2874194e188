"""Task metrics, x100 as in the paper's tables (DePT `src/metrics.py`, ATTEMPT `attempt/metrics`).

    score("cb", predictions, examples)  # {"macro_f1": .., "accuracy": .., "avg": ..}

Predictions: classification -> a class index or a string (label word, case-insensitive; any
other string counts as wrong, like an invalid T5 generation); regression -> floats or numeric
strings (unparsable -> -1.0, as DePT); generation -> strings.

- accuracy; mcc (CoLA, sklearn); f1 (binary, positive class 1; an invalid prediction counts as
  the opposite of its gold label, DePT `f1_score_with_invalid`); macro_f1 (CB, over the 3
  classes); avg (CB: mean of the task's other metrics); pearson / spearman (scipy; NaN from a
  constant prediction -> 0, as DePT); f1a (MultiRC: binary F1 over all answer options) and em
  (MultiRC: share of question groups with every option right, ATTEMPT `mean_group_metric`);
  squad_f1 / squad_em (MRQA: SQuAD normalisation, max over all gold answers).

Classification and regression results also carry `invalid` (how many predictions are not a
label: a generated string that is no label word, an unparsable number) and `invalid_rate` (% of
predictions). Rank classification never produces one; greedy generation (the paper's protocol)
can, and each counts as wrong above. Free-text tasks have no invalid answer.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict
from typing import Any, Callable, Sequence

from ept.registry import Registry
from ept.tasks.spec import Example, TaskSpec

Metric = Callable[[list, list, Sequence[Example], TaskSpec], float]
METRICS: Registry[Metric] = Registry("metric")
INVALID = -1


def _label_index(pred: Any, spec: TaskSpec) -> int:
    if isinstance(pred, str):
        words = [w.lower() for w in spec.label_words]
        text = pred.strip().lower()
        return words.index(text) if text in words else INVALID
    try:
        value = float(pred)
    except (TypeError, ValueError):
        return INVALID
    index = int(value) if value.is_integer() else INVALID
    return index if 0 <= index < len(spec.label_words) else INVALID


def _float(pred: Any, invalid: float | None = -1.0) -> float | None:
    """A prediction as a number; `invalid` (DePT: -1.0) when it is none (or not finite)."""
    try:
        value = float(pred.strip() if isinstance(pred, str) else pred)
    except (TypeError, ValueError):
        return invalid
    return value if math.isfinite(value) else invalid


def _invalid_to_wrong(preds: list[int], golds: list[int]) -> list[int]:
    """DePT `f1_score_with_invalid`: an invalid binary prediction becomes the wrong label."""
    return [p if p in (0, 1) else 1 - g for p, g in zip(preds, golds)]


def accuracy(preds, golds, examples, spec) -> float:
    return 100.0 * sum(p == g for p, g in zip(preds, golds)) / len(golds)


def mcc(preds, golds, examples, spec) -> float:
    from sklearn.metrics import matthews_corrcoef

    return 100.0 * float(matthews_corrcoef(golds, preds))


def binary_f1(preds, golds, examples, spec) -> float:
    from sklearn.metrics import f1_score

    return 100.0 * float(f1_score(golds, _invalid_to_wrong(preds, golds), pos_label=1, zero_division=0))


def macro_f1(preds, golds, examples, spec) -> float:
    from sklearn.metrics import f1_score

    labels = list(range(len(spec.label_words)))  # ATTEMPT mean_multiclass_f1: labels=range(num_classes)
    return 100.0 * float(f1_score(golds, preds, labels=labels, average="macro", zero_division=0))


def _correlation(kind: str, preds, golds) -> float:
    from scipy import stats

    if len(golds) < 2 or len(set(preds)) < 2 or len(set(golds)) < 2:
        return 0.0  # undefined (constant input): DePT maps the NaN to 0
    value = (stats.pearsonr if kind == "pearson" else stats.spearmanr)(preds, golds)[0]
    return 0.0 if math.isnan(value) else 100.0 * float(value)


def pearson(preds, golds, examples, spec) -> float:
    return _correlation("pearson", preds, golds)


def spearman(preds, golds, examples, spec) -> float:
    return _correlation("spearman", preds, golds)


def multirc_em(preds, golds, examples, spec) -> float:
    groups: dict[str, bool] = defaultdict(lambda: True)
    for p, g, ex in zip(preds, golds, examples):
        groups[ex.group if ex.group is not None else id(ex)] &= p == g
    return 100.0 * sum(groups.values()) / len(groups)


_PUNCTUATION = frozenset(string.punctuation)


def normalize_squad(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, drop punctuation and articles, squash whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_token_f1(prediction: str, answer: str) -> float:
    pred_tokens, gold_tokens = normalize_squad(prediction).split(), normalize_squad(answer).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _answers(ex: Example) -> tuple[str, ...]:
    return ex.answers or (ex.target,)


def squad_f1(preds, golds, examples, spec) -> float:
    best = [max(squad_token_f1(p, a) for a in _answers(ex)) for p, ex in zip(preds, examples)]
    return 100.0 * sum(best) / len(examples)


def squad_em(preds, golds, examples, spec) -> float:
    return 100.0 * sum(max(normalize_squad(p) == normalize_squad(a) for a in _answers(ex))
                       for p, ex in zip(preds, examples)) / len(examples)


for _name, _fn in (("accuracy", accuracy), ("mcc", mcc), ("f1", binary_f1), ("macro_f1", macro_f1),
                   ("pearson", pearson), ("spearman", spearman), ("f1a", binary_f1), ("em", multirc_em),
                   ("squad_f1", squad_f1), ("squad_em", squad_em)):
    METRICS.register(_name, _fn)
METRICS.register("avg", lambda preds, golds, examples, spec: math.nan)  # computed from the others in score()


def score(spec_or_name: TaskSpec | str, predictions: Sequence[Any], examples: Sequence[Example]) -> dict[str, float]:
    """The task's metrics (x100) for predictions aligned with examples; includes main and avg."""
    if isinstance(spec_or_name, TaskSpec):
        spec = spec_or_name
    else:
        from ept.tasks.catalog import get_task

        spec = get_task(spec_or_name)
    predictions, examples = list(predictions), list(examples)
    if len(predictions) != len(examples):
        raise ValueError(f"{spec.name}: {len(predictions)} predictions for {len(examples)} examples")
    if not examples:
        raise ValueError(f"{spec.name}: cannot score an empty set of examples")
    invalid = None
    if spec.kind == "classification":
        preds = [_label_index(p, spec) for p in predictions]
        golds = [int(ex.label) for ex in examples]
        invalid = sum(p == INVALID for p in preds)
    elif spec.kind == "regression":
        preds, golds = [_float(p) for p in predictions], [float(ex.label) for ex in examples]
        invalid = sum(_float(p, None) is None for p in predictions)
    else:
        preds, golds = ["" if p is None else str(p) for p in predictions], [ex.target for ex in examples]
    results = {name: METRICS.get(name)(preds, golds, examples, spec) for name in spec.metrics if name != "avg"}
    if "avg" in spec.metrics:
        results["avg"] = sum(results.values()) / len(results)
    out = {name: results[name] for name in spec.metrics}
    if invalid is not None:  # after avg: a count is not a metric to average
        out.update(invalid=invalid, invalid_rate=100.0 * invalid / len(examples))
    return out
