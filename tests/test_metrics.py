"""Metrics against hand-computed values (x100, as in the paper's tables)."""

from __future__ import annotations

import pytest

from ept.tasks import Example, get_task, normalize_squad, score
from ept.tasks.metrics import squad_token_f1


def cls(labels: list[int], task: str, groups: list[str] | None = None) -> list[Example]:
    words = get_task(task).label_words
    return [Example(f"s{i}", words[y], y, (f"s{i}",), group=groups[i] if groups else None) for i, y in enumerate(labels)]


def test_accuracy_accepts_indices_and_words_and_counts_invalid_as_wrong():
    examples = cls([0, 1, 1, 0, 1], "sst2")
    preds = [0, "positive", " Positive ", "neutral", 7]  # word match ignores case/space; others are wrong
    # "neutral" and 7 are not labels: counted as invalid (a T5 generation that is no label word)
    assert score("sst2", preds, examples) == {"accuracy": pytest.approx(60.0), "invalid": 2,
                                               "invalid_rate": pytest.approx(40.0)}


def test_mcc_cola():
    # TP=1 TN=2 FP=0 FN=1: (1*2 - 0*1) / sqrt((1+0)(1+1)(2+0)(2+1)) = 2 / sqrt(12)
    result = score("cola", ["acceptable", "unacceptable", 0, 0], cls([1, 1, 0, 0], "cola"))
    assert result == {"mcc": pytest.approx(100 * 2 / 12 ** 0.5), "invalid": 0, "invalid_rate": 0.0}


def test_binary_f1_invalid_becomes_wrong():
    # preds [1, invalid->1 (gold 0), 0, 1] vs gold [1, 0, 1, 1]: TP=2 FP=1 FN=1 -> F1 = 4/6
    result = score("mrpc", ["equivalent", "garbage", "not_equivalent", 1], cls([1, 0, 1, 1], "mrpc"))
    assert result["f1"] == pytest.approx(100 * 4 / 6)
    assert result["accuracy"] == pytest.approx(50.0)


def test_cb_macro_f1_accuracy_and_their_mean():
    # gold [0,1,2,0], pred [0,1,1,invalid]: F1 per class 2/3, 2/3, 0 -> macro 4/9; accuracy 1/2
    result = score("cb", ["entailment", "contradiction", "contradiction", "maybe"], cls([0, 1, 2, 0], "cb"))
    assert result["macro_f1"] == pytest.approx(100 * 4 / 9)
    assert result["accuracy"] == pytest.approx(50.0)
    assert result["avg"] == pytest.approx((100 * 4 / 9 + 50.0) / 2)
    assert list(result) == ["macro_f1", "accuracy", "avg", "invalid", "invalid_rate"]  # avg over metrics only
    assert result["invalid"] == 1 and result["invalid_rate"] == pytest.approx(25.0)
    assert get_task("cb").main_metric == "avg"


def stsb(golds: list[float]) -> list[Example]:
    return [Example(f"s{i}", "0.0", g, ("a", "b")) for i, g in enumerate(golds)]


def test_cb_macro_f1_is_over_all_three_classes():
    # ATTEMPT mean_multiclass_f1(labels=range(3)): a class absent from gold and predictions scores F1 = 0
    result = score("cb", [0, 1, 0, 1], cls([0, 1, 0, 1], "cb"))
    assert result["macro_f1"] == pytest.approx(100 * 2 / 3)


def test_stsb_pearson_spearman_with_unparsable_prediction():
    # preds -> [1, -1 (unparsable), 3, 4]; gold [1, 2, 3, 4]
    # Pearson: sum dxdy = 6.5, sum dx^2 = 14.75, sum dy^2 = 5 -> 6.5 / sqrt(73.75)
    # Spearman: ranks [2,1,3,4] vs [1,2,3,4], sum d^2 = 2 -> 1 - 6*2 / (4*15) = 0.8
    result = score("stsb", ["1.0", "n/a", 3, 4.0], stsb([1.0, 2.0, 3.0, 4.0]))
    assert result["pearson"] == pytest.approx(100 * 6.5 / 73.75 ** 0.5)
    assert result["spearman"] == pytest.approx(80.0)
    assert (result["invalid"], result["invalid_rate"]) == (1, pytest.approx(25.0))  # "n/a"


def test_stsb_constant_prediction_scores_zero_not_nan():
    assert score("stsb", [2.0, 2.0, 2.0], stsb([1.0, 2.0, 3.0])) == {"pearson": 0.0, "spearman": 0.0,
                                                                     "invalid": 0, "invalid_rate": 0.0}


def test_multirc_f1a_and_grouped_exact_match():
    # question q1: 3 options all right; q2: 2 options, one wrong -> EM 1/2
    # over all options gold [1,0,1,0,1] pred [1,0,1,0,0]: TP=2 FP=0 FN=1 -> F1a = 4/5
    examples = cls([1, 0, 1, 0, 1], "multirc", groups=["q1", "q1", "q1", "q2", "q2"])
    result = score("multirc", ["true", "false", 1, "false", "false"], examples)
    assert result == {"f1a": pytest.approx(80.0), "em": pytest.approx(50.0), "invalid": 0, "invalid_rate": 0.0}


@pytest.mark.parametrize("text,normal", [
    ("The  Eiffel Tower!", "eiffel tower"), ("An apple, a day.", "apple day"), ("U.S.A.", "usa"),
    ("Theater of the Absurd", "theater of absurd"), ("  35 , 000 .", "35 000"),
])
def test_squad_normalisation(text, normal):
    assert normalize_squad(text) == normal


def test_squad_f1_em_take_the_max_over_gold_answers():
    assert squad_token_f1("the Eiffel tower in Paris", "Eiffel Tower") == pytest.approx(2 * 0.5 * 1 / 1.5)
    examples = [Example("q1", "Gustave Eiffel", None, ("q", "c"), answers=("Gustave Eiffel", "Eiffel")),
                Example("q2", "1889", None, ("q", "c"), answers=("1889",)),
                Example("q3", "the Himalayas", None, ("q", "c"), answers=("the Himalayas",))]
    # q1: "eiffel" matches the 2nd answer exactly; q2: wrong; q3: "himalayas mountains" F1 = 2*(1/2*1)/(1.5)
    result = score("nq", ["Eiffel", "1890", "Himalayas mountains"], examples)
    assert result["squad_em"] == pytest.approx(100 / 3)
    assert result["squad_f1"] == pytest.approx(100 * (1 + 0 + 2 / 3) / 3)
    assert "invalid" not in result  # free text: any answer is an answer
    assert get_task("nq").main_metric == "squad_f1"


def test_score_rejects_misaligned_or_empty_input():
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        score("rte", [0, 1], cls([0], "rte"))
    with pytest.raises(ValueError, match="empty"):
        score("rte", [], [])


def test_score_accepts_a_spec_and_every_task_has_a_main_metric():
    from ept.tasks import task_names

    for name in task_names():
        spec = get_task(name)
        if spec.kind == "classification":
            examples = cls(list(range(len(spec.label_words))) * 2, name)
            preds = [ex.target for ex in examples]
        elif spec.kind == "regression":
            examples, preds = stsb([0.0, 1.0, 2.0, 3.0]), [0.0, 1.0, 2.0, 3.0]
        else:
            examples = [Example("q", "a b", None, ("q", "c"), answers=("a b",))] * 2
            preds = ["a b", "A  b."]
        result = score(spec, preds, examples)
        assert result[spec.main_metric] == pytest.approx(100.0), name
