"""Task registry, specs and templates: every task renders a hand-written record as documented."""

from __future__ import annotations

import dataclasses

import pytest

from ept.registry import UnknownNameError
from ept.tasks import TAGS, Example, TaskSpec, get_task, task_names
from ept.tasks.spec import stsb_string
from ept.tasks.templates import mark_span, pad_punctuation, remove_markup

PAPER21 = ["boolq", "cb", "multirc", "wic", "wsc", "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte",
           "nq", "hotpotqa", "searchqa", "newsqa", "winogrande", "yelp", "scitail", "paws"]


def test_registry_has_the_21_tasks_in_paper_order():
    assert task_names() == PAPER21
    assert task_names("paper21") == PAPER21
    assert task_names("glue") == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"]
    assert task_names("superglue") == ["boolq", "cb", "multirc", "wic", "wsc"]
    assert task_names("mrqa") == ["nq", "hotpotqa", "searchqa", "newsqa"]
    assert task_names("others") == ["winogrande", "yelp", "scitail", "paws"]
    assert set(TAGS) == {"glue", "superglue", "mrqa", "others", "paper21"}


def test_unknown_task_and_tag_name_the_allowed_values():
    with pytest.raises(UnknownNameError, match="did you mean|Did you mean") as err:
        get_task("sst3")
    assert "sst2" in str(err.value) and "paws" in str(err.value)
    with pytest.raises(ValueError, match="allowed: glue, superglue"):
        task_names("benchmark")


@pytest.mark.parametrize("alias,name", [("sst-2", "sst2"), ("sts-b", "stsb"), ("yelp_polarity", "yelp"),
                                        ("paws-wiki", "paws"), ("superglue-boolq", "boolq"), ("wsc.fixed", "wsc"),
                                        ("SST2", "sst2")])
def test_aliases(alias, name):
    assert get_task(alias).name == name


@pytest.mark.parametrize("name", PAPER21)
def test_every_spec_is_consistent(name):
    spec = get_task(name)
    assert spec.main_metric in spec.metrics
    assert spec.max_length == {"multirc": 348}.get(name, 512 if spec.benchmark == "mrqa" else 256)
    assert spec.hub is not None and spec.hub.path
    assert spec.local_train or spec.local_eval
    if spec.kind == "classification":
        assert len(set(spec.label_words)) == len(spec.label_words) >= 2
        assert not any(w.isdigit() for w in spec.label_words), "label words, not index strings"
    hash(spec)  # frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]


def test_spec_validation_gathers_problems():
    with pytest.raises(ValueError, match="kind 'ranking'.*main_metric 'f1'"):
        TaskSpec("x", "glue", "ranking", "{a}", ("a",), metrics=("accuracy",), main_metric="f1", train_size=10)
    with pytest.raises(ValueError, match="train_size"):
        TaskSpec("x", "glue", "classification", "{a}", ("a",), label_words=("no", "yes"))


def test_split_rule_thresholds():
    spec = get_task("sst2")
    rule = lambda n: dataclasses.replace(spec, train_size=n).split_rule  # noqa: E731
    assert rule(9_999) == ("halve", 0)
    assert rule(10_000) == ("sample", 1_000)
    assert rule(99_999) == ("sample", 1_000)
    assert rule(100_000) == ("sample", 10_000)
    assert {n: get_task(n).split_rule[0] for n in ("cola", "boolq", "sst2", "qqp")} == {
        "cola": "halve", "boolq": "halve", "sst2": "sample", "qqp": "sample"}


# One hand-written record per task -> (source, target). Labels are already canonical here.
RECORDS = {
    "boolq": ({"question": "is the sun a star", "passage": "The Sun is a star.", "label": 1},
              "boolq question: is the sun a star passage: The Sun is a star.", "true"),
    "cb": ({"premise": "It rained.", "hypothesis": "It was dry.", "label": 1},
           "cb premise: It rained. hypothesis: It was dry.", "contradiction"),
    "multirc": ({"paragraph": "<b>Sent 1: </b>Tom runs.<br>", "question": "Who runs?", "answer": "Tom",
                 "group": "0-3", "label": 1},
                "multirc question: Who runs? answer: Tom paragraph: Sent 1: Tom runs.", "true"),
    "wic": ({"word": "bank", "sentence1": "The river bank.", "sentence2": "The bank lent money.", "label": 0},
            "wic sentence1: The river bank. sentence2: The bank lent money. word: bank", "false"),
    "wsc": ({"text": "Mark told Pete many lies about himself, which Pete included in his book. He should have "
                     "been more skeptical.", "span1_text": "Mark", "span1_index": 0, "span2_text": "He",
             "span2_index": 13, "label": 0},
            "wsc text: * Mark * told Pete many lies about himself, which Pete included in his book. # He # should "
            "have been more skeptical.", "false"),
    "cola": ({"sentence": "The book was by John written.", "label": 0},
             "cola sentence: The book was by John written.", "unacceptable"),
    "sst2": ({"sentence": "a charming journey ", "label": 1}, "sst2 sentence: a charming journey", "positive"),
    "mrpc": ({"sentence1": "He said hi.", "sentence2": "He greeted us.", "label": 1},
             "mrpc sentence1: He said hi. sentence2: He greeted us.", "equivalent"),
    "stsb": ({"sentence1": "A plane takes off.", "sentence2": "An air plane is taking off.", "label": 3.8},
             "stsb sentence1: A plane takes off. sentence2: An air plane is taking off.", "3.8"),
    "qqp": ({"question1": "How to learn Python?", "question2": "How do I learn Python?", "label": 1},
            "qqp question1: How to learn Python? question2: How do I learn Python?", "duplicate"),
    "mnli": ({"premise": "A cat sleeps.", "hypothesis": "An animal rests.", "label": 0},
             "mnli premise: A cat sleeps. hypothesis: An animal rests.", "entailment"),
    "qnli": ({"question": "Where is Rome?", "sentence": "Rome is in Italy.", "label": 0},
             "qnli question: Where is Rome? sentence: Rome is in Italy.", "entailment"),
    "rte": ({"sentence1": "A man sleeps.", "sentence2": "A person is awake.", "label": 1},
            "rte sentence1: A man sleeps. sentence2: A person is awake.", "not_entailment"),
    "nq": ({"question": "who named it?", "context": "It was named after G. Eiffel (1889).", "label": ("G. Eiffel", "Eiffel")},
           "nq question: who named it ? context: It was named after G . Eiffel ( 1889 ) .", "G . Eiffel"),
    "hotpotqa": ({"question": "q?", "context": "c.", "label": ("a",)}, "hotpotqa question: q ? context: c .", "a"),
    "searchqa": ({"question": "q", "context": "c", "label": ("a",)}, "searchqa question: q context: c", "a"),
    "newsqa": ({"question": "q", "context": "c", "label": ("a b",)}, "newsqa question: q context: c", "a b"),
    "winogrande": ({"sentence": "The trophy doesn't fit in the suitcase because the _ is too small.",
                    "option1": "trophy", "option2": "suitcase", "label": 1},
                   "winogrande sentence: The trophy doesn't fit in the suitcase because the _ is too small. "
                   "option1: trophy option2: suitcase", "option2"),
    "yelp": ({"sentence": "Great tacos!", "label": 1}, "yelp sentence: Great tacos!", "positive"),
    "scitail": ({"premise": "Plants photosynthesize.", "hypothesis": "Plants make food.", "label": 0},
                "scitail premise: Plants photosynthesize. hypothesis: Plants make food.", "entailment"),
    "paws": ({"sentence1": "Tom bought it from Mary .", "sentence2": "Mary bought it from Tom .", "label": 0},
             "paws sentence1: Tom bought it from Mary . sentence2: Mary bought it from Tom .", "not_paraphrase"),
}


@pytest.mark.parametrize("name", PAPER21)
def test_template_renders_hand_written_record(name):
    spec = get_task(name)
    record, source, target = RECORDS[name]
    ex = spec.to_example(record)
    assert isinstance(ex, Example)
    assert (ex.source, ex.target) == (source, target)
    assert spec.template(record) == source
    assert len(ex.fields) == len(spec.fields)
    if spec.kind == "generation":
        assert ex.label is None and ex.answers[0] == target
    else:
        assert ex.label == record["label"]


def test_multirc_group_and_mrqa_answers():
    ex = get_task("multirc").to_example(RECORDS["multirc"][0])
    assert ex.group == "0-3"
    ex = get_task("nq").to_example(RECORDS["nq"][0])
    assert ex.answers == ("G . Eiffel", "Eiffel")
    assert ex.fields == ("who named it ?", "It was named after G . Eiffel ( 1889 ) .")


@pytest.mark.parametrize("score,text", [(5.0, "5.0"), (0.0, "0.0"), (3.8, "3.8"), (1.11, "1.2"), (4.29, "4.2"),
                                        (2.5, "2.4"), (0.1, "0.0")])
def test_stsb_targets_are_true_point_two_steps(score, text):
    # T5: round(label * 5) / 5, half to even like tf.round (2.5 * 5 = 12.5 -> 12 -> "2.4").
    assert stsb_string(score) == text
    assert text in get_task("stsb").label_words


def test_stsb_label_words_and_anchors():
    spec = get_task("stsb")
    assert spec.label_words == tuple(f"{i * 0.2:.1f}" for i in range(26))
    assert spec.value_range == (0.0, 5.0) and len(spec.anchor_words) == 2


def test_mark_span_variants():
    words = "The man couldn't lift his son because he was so weak .".split()
    assert " ".join(mark_span(words, "he", 7, "#")) == "The man couldn't lift his son because # he # was so weak ."
    # the span ends inside a word: punctuation stays outside the marks
    assert " ".join(mark_span("I saw him.".split(), "him", 2, "#")) == "I saw # him #."
    # multi-word span with a newline inside the span text (SuperGLUE WSC train has one)
    assert " ".join(mark_span("a big\ndog barked".split(), "big\ndog", 1, "*")) == "a * big dog * barked"
    # a wrong index (SuperGLUE WSC val has one): the nearest occurrence is marked
    assert " ".join(mark_span("you might use it , but".split(), "it", 2, "#")) == "you might use # it # , but"
    # a span that does not occur is left unmarked
    assert mark_span(["a", "b"], "zzz", 0, "*") == ["a", "b"]


def test_wsc_span2_before_span1():
    record = {"text": "He said that Bill would come .", "span1_text": "Bill", "span1_index": 3,
              "span2_text": "He", "span2_index": 0, "label": 1}
    assert get_task("wsc").template(record) == "wsc text: # He # said that * Bill * would come ."


def test_pad_punctuation_and_markup():
    assert pad_punctuation("U.S. troops (35,000) -- go!") == "U . S . troops ( 35 , 000 ) - - go !"
    assert pad_punctuation("naïve_café 1889") == "naïve_café 1889"
    assert remove_markup("<b>Sent 1: </b>Hi.<br><b>Sent 2: </b>Bye.<br>") == "Sent 1: Hi. Sent 2: Bye. "
