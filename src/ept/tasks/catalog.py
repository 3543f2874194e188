"""The 21 tasks of the paper (Table 5), one registry entry each, in the paper's order.

Templates follow T5 (Raffel et al.): the task name, then the fields with their prefixes, in the
field order of ATTEMPT / DePT `tasks.py` (DePT `src/tasks.py`); targets are label *words*.
Official sizes are those of the full datasets (they decide the split rule, Appendix B.1);
local files are listed in the layout of ../shared/data (see docs/tasks.md for every choice).
"""

from __future__ import annotations

from ept.registry import Registry
from dataclasses import replace

from ept.tasks.spec import HubSource, LocalFile, TaskSpec, Template

TASKS: Registry[TaskSpec] = Registry("task")
TAGS = ("glue", "superglue", "mrqa", "others", "paper21")


def _alt(*files: LocalFile | tuple[LocalFile, ...]) -> tuple[tuple[LocalFile, ...], ...]:
    """Alternatives, first found wins; a tuple inside means 'these files together'."""
    return tuple(f if isinstance(f, tuple) else (f,) for f in files)


def _tsv(path: str, columns: tuple[str, ...], header: bool = True, **kw) -> LocalFile:
    return LocalFile(path, "tsv", columns=columns, header=header, **kw)


def _jsonl(path: str, reader: str = "jsonl", note: str = "", **fields: str) -> LocalFile:
    return LocalFile(path, reader, fields=tuple(fields.items()), note=note)


def _superglue(reader: str = "jsonl", train_extra=(), **fields: str) -> dict:
    """SuperGLUE jsonl: train.jsonl (else the FewGLUE 32-shot train), val.jsonl, FewGLUE dev32."""
    def f(path, note=""):
        return _jsonl(path, reader, note, **fields)
    return dict(local_train=_alt(f("train.jsonl"), *train_extra, f("fewglue/train.jsonl", "FewGLUE 32-shot subset")),
                local_eval=_alt(f("val.jsonl")), local_dev=_alt(f("fewglue/dev32.jsonl", "FewGLUE dev32")))


def _mrqa(name: str, stem: str, train_size: int, eval_size: int, eval_extra=(), aliases=()) -> TaskSpec:
    """An MRQA 2019 in-domain task: official files train/<stem>.jsonl.gz, dev/<stem>.jsonl.gz."""
    def f(path):
        return LocalFile(path, "mrqa")
    return TaskSpec(
        name, "mrqa", "generation", f"{name} question: {{question}} context: {{context}}", ("question", "context"),
        preprocess="mrqa", metrics=("squad_f1", "squad_em"), main_metric="squad_f1", max_length=512,
        train_size=train_size, eval_size=eval_size,
        hub=HubSource("mrqa-workshop/mrqa", filter=("subset", stem), fields=(("label", "answers"),)),
        local_train=_alt(f(f"train/{stem}.jsonl.gz"), f(f"train/{stem}.jsonl")),
        local_eval=_alt(f(f"dev/{stem}.jsonl.gz"), f(f"dev/{stem}.jsonl"), *eval_extra),
        aliases=aliases, reference=f"{_DEPT} {stem}; MRQA 2019 shared task (in-domain)",
        doc=f"MRQA {stem}: extractive QA, F1/EM over all gold answers")


_BIN = ("false", "true")
_ENT2 = ("entailment", "not_entailment")
_DEPT = "ATTEMPT attempt/data/tasks.py, DePT src/tasks.py"
_COLA = ("_", "label", "_", "sentence")
_PAIR = ("_", "sentence1", "sentence2", "label")  # index, sentence1, sentence2, label (RTE, PAWS)
_QQP = ("_", "_", "_", "question1", "question2", "label")
_MNLI = (("premise", "sentence1"), ("hypothesis", "sentence2"), ("label", "gold_label"))  # GLUE header names
_WSC = {f"span{i}_{k}": f"target.span{i}_{k}" for i in (1, 2) for k in ("text", "index")}
_WINO = dict(fields=(("label", "answer"),), label_map=(("1", 0), ("2", 1)))
_YELP_CSV = dict(columns=("label", "sentence"), skip_first_if=("0,1",), label_map=(("1", 0), ("2", 1)))
_SCITAIL = dict(premise="sentence1", hypothesis="sentence2", label="gold_label")

SPECS = [
    # ---------------------------------------------------------------- SuperGLUE
    TaskSpec(
        "boolq", "superglue", "classification", "boolq question: {question} passage: {passage}",
        ("question", "passage"), label_words=_BIN, train_size=9_427, eval_size=3_270,
        hub=HubSource("aps/super_glue", "boolq"), **_superglue(), aliases=("superglue-boolq",),
        reference=f"{_DEPT} SuperGLUEBoolQ", doc="yes/no questions on a Wikipedia passage"),
    TaskSpec(
        "cb", "superglue", "classification", "cb premise: {premise} hypothesis: {hypothesis}",
        ("premise", "hypothesis"), label_words=("entailment", "contradiction", "neutral"),
        metrics=("macro_f1", "accuracy", "avg"), main_metric="avg", train_size=250, eval_size=56,
        hub=HubSource("aps/super_glue", "cb"), **_superglue(), aliases=("superglue-cb",),
        reference=f"{_DEPT} SuperGLUECB", doc="CommitmentBank 3-way NLI; main = mean(macro-F1, acc)"),
    TaskSpec(
        "multirc", "superglue", "classification",
        "multirc question: {question} answer: {answer} paragraph: {paragraph}",
        ("question", "answer", "paragraph"), label_words=_BIN, extra=("group",), group_key="group",
        preprocess="multirc", metrics=("f1a", "em"), main_metric="f1a", max_length=348,
        train_size=27_243, eval_size=4_848,
        hub=HubSource("aps/super_glue", "multirc", fields=(("group", "idx.question"),)),
        **_superglue("multirc"), aliases=("superglue-multirc",),
        reference=f"{_DEPT} SuperGLUEMultiRC", doc="one example per answer option, grouped by question"),
    TaskSpec(
        "wic", "superglue", "classification", "wic sentence1: {sentence1} sentence2: {sentence2} word: {word}",
        ("sentence1", "sentence2", "word"), label_words=_BIN, train_size=5_428, eval_size=638,
        hub=HubSource("aps/super_glue", "wic"),
        **_superglue(train_extra=((
            LocalFile("mapo/train.jsonl", "wic_mapo",
                      note="re-formatted WiC train, tokenized; parsed back into fields"),
            LocalFile("mapo/test.jsonl", "wic_mapo")),)),
        aliases=("superglue-wic",), reference=f"{_DEPT} SuperGLUEWIC", doc="word in context"),
    TaskSpec(
        "wsc", "superglue", "classification", "wsc text: {text}", ("text",), label_words=_BIN,
        extra=("span1_text", "span1_index", "span2_text", "span2_index"), preprocess="wsc",
        train_size=554, eval_size=104, hub=HubSource("aps/super_glue", "wsc.fixed"), **_superglue(**_WSC),
        aliases=("superglue-wsc", "superglue-wsc.fixed", "wsc.fixed"),
        reference=f"{_DEPT} SuperGLUEWSCFixed; T5 wsc_simple marks", doc="coreference; * span1 *, # pronoun #"),
    # ---------------------------------------------------------------- GLUE
    TaskSpec(
        "cola", "glue", "classification", "cola sentence: {sentence}", ("sentence",),
        label_words=("unacceptable", "acceptable"), metrics=("mcc",), main_metric="mcc",
        train_size=8_551, eval_size=1_043, hub=HubSource("nyu-mll/glue", "cola"),
        local_train=_alt((_tsv("train.tsv", _COLA, header=False), _tsv("val.tsv", _COLA, header=False)),
                         _tsv("train.tsv", _COLA, header=False)),
        local_eval=_alt(_tsv("dev.tsv", _COLA, header=False)),
        reference=f"{_DEPT} COLA; T5 glue labels", doc="grammatical acceptability (MCC)"),
    TaskSpec(
        "sst2", "glue", "classification", "sst2 sentence: {sentence}", ("sentence",),
        label_words=("negative", "positive"), train_size=67_349, eval_size=872,
        hub=HubSource("nyu-mll/glue", "sst2"),
        local_train=_alt((_tsv("train.tsv", ("sentence", "label")), _tsv("train_heldout.tsv", ("sentence", "label"))),
                         _tsv("train.tsv", ("sentence", "label"))),
        local_eval=_alt(_tsv("dev.tsv", ("sentence", "label"))), aliases=("sst-2",),
        reference=f"{_DEPT} SST2", doc="movie review sentiment"),
    TaskSpec(
        "mrpc", "glue", "classification", "mrpc sentence1: {sentence1} sentence2: {sentence2}",
        ("sentence1", "sentence2"), label_words=("not_equivalent", "equivalent"),
        metrics=("accuracy", "f1"), train_size=3_668, eval_size=408, hub=HubSource("nyu-mll/glue", "mrpc"),
        local_train=_alt(_tsv("train.tsv", ("label", "_", "_", "sentence1", "sentence2"))),
        local_eval=_alt(_tsv("dev.tsv", ("label", "_", "_", "sentence1", "sentence2"))),
        reference=f"{_DEPT} MRPC", doc="paraphrase (news)"),
    TaskSpec(
        "stsb", "glue", "regression", "stsb sentence1: {sentence1} sentence2: {sentence2}",
        ("sentence1", "sentence2"), label_words=tuple(f"{i / 5:.1f}" for i in range(26)),
        anchor_words=("different", "same"), value_range=(0.0, 5.0),
        metrics=("pearson", "spearman"), main_metric="pearson", train_size=5_749, eval_size=1_500,
        hub=HubSource("nyu-mll/glue", "stsb"),
        local_train=_alt(_tsv("train.tsv", ("_",) * 7 + ("sentence1", "sentence2", "label"))),
        local_eval=_alt(_tsv("dev.tsv", ("_",) * 7 + ("sentence1", "sentence2", "label"))),
        aliases=("sts-b",), reference=f"{_DEPT} STSB; T5 stsb preprocessor (0.2 steps)",
        doc="similarity 0-5 as text rounded to 0.2"),
    TaskSpec(
        "qqp", "glue", "classification", "qqp question1: {question1} question2: {question2}",
        ("question1", "question2"), label_words=("not_duplicate", "duplicate"),
        metrics=("accuracy", "f1"), train_size=363_846, eval_size=40_430, hub=HubSource("nyu-mll/glue", "qqp"),
        local_train=_alt(_tsv("train.tsv", _QQP),
                         _tsv("new_dev.tsv", _QQP, header=False, repair_missing_tab=True,
                              note="23,497 pairs held out of the official train")),
        local_eval=_alt(_tsv("dev.tsv", _QQP)),
        reference=f"{_DEPT} QQP", doc="Quora duplicate questions"),
    TaskSpec(
        "mnli", "glue", "classification", "mnli premise: {premise} hypothesis: {hypothesis}",
        ("premise", "hypothesis"), label_words=("entailment", "neutral", "contradiction"),
        train_size=392_702, eval_size=9_815, prefer_dev=True,
        hub=HubSource("nyu-mll/glue", "mnli", eval="validation_matched", dev="validation_mismatched"),
        local_train=_alt(LocalFile("train.tsv", "tsv", header=True, fields=_MNLI)),
        local_eval=_alt(LocalFile("dev_matched.tsv", "tsv", header=True, fields=_MNLI),
                        _tsv("textfooler_mnli_matched.tsv", ("label", "premise", "hypothesis"), header=False,
                             note="TextFooler sample of validation_matched, PTB-tokenized")),
        local_dev=_alt(LocalFile("dev_mismatched.tsv", "tsv", header=True, fields=_MNLI),
                       _tsv("textfooler_mnli_mismatched.tsv", ("label", "premise", "hypothesis"), header=False,
                            note="TextFooler sample of validation_mismatched")),
        reference=f"{_DEPT} MNLI", doc="multi-genre NLI; test = matched"),
    TaskSpec(
        "qnli", "glue", "classification", "qnli question: {question} sentence: {sentence}",
        ("question", "sentence"), label_words=_ENT2, train_size=104_743, eval_size=5_463,
        hub=HubSource("nyu-mll/glue", "qnli"),
        local_train=_alt(_tsv("train.tsv", ("_", "question", "sentence", "label"))),
        local_eval=_alt(_tsv("dev.tsv", ("_", "question", "sentence", "label"))),
        reference=f"{_DEPT} QNLI", doc="question/sentence entailment"),
    TaskSpec(
        "rte", "glue", "classification", "rte sentence1: {sentence1} sentence2: {sentence2}",
        ("sentence1", "sentence2"), label_words=_ENT2, train_size=2_490, eval_size=277,
        hub=HubSource("nyu-mll/glue", "rte"),
        local_train=_alt((_tsv("train.tsv", _PAIR), _tsv("val.tsv", _PAIR, header=False)),
                         _tsv("train.tsv", _PAIR),
                         _jsonl("train.jsonl", sentence1="premise", sentence2="hypothesis"),
                         _jsonl("fewglue/train.jsonl", note="FewGLUE 32-shot subset",
                                sentence1="premise", sentence2="hypothesis")),
        local_eval=_alt(_tsv("dev.tsv", _PAIR), _jsonl("val.jsonl", sentence1="premise", sentence2="hypothesis")),
        local_dev=_alt(_jsonl("fewglue/dev32.jsonl", note="FewGLUE dev32",
                              sentence1="premise", sentence2="hypothesis")),
        aliases=("superglue-rte",), reference=f"{_DEPT} RTE", doc="recognizing textual entailment"),
    # ---------------------------------------------------------------- MRQA 2019 (in-domain)
    _mrqa("nq", "NaturalQuestionsShort", 104_071, 12_836, aliases=("naturalquestions",)),
    _mrqa("hotpotqa", "HotpotQA", 72_928, 5_901),
    _mrqa("searchqa", "SearchQA", 117_384, 16_980),
    _mrqa("newsqa", "NewsQA", 74_160, 4_212, eval_extra=(
        LocalFile("NewsQA_sample.jsonl", "mrqa", note="official 3-context format sample (origin split unknown)"),)),
    # ---------------------------------------------------------------- Others
    TaskSpec(
        "winogrande", "others", "classification",
        "winogrande sentence: {sentence} option1: {option1} option2: {option2}",
        ("sentence", "option1", "option2"), label_words=("option1", "option2"),
        train_size=40_398, eval_size=1_267, hub=HubSource("allenai/winogrande", "winogrande_xl", **_WINO),
        local_train=_alt(LocalFile("train_xl.jsonl", "jsonl", **_WINO)),
        local_eval=_alt(LocalFile("dev.jsonl", "jsonl", **_WINO)),
        reference=f"{_DEPT} WinoGrande (option2 bug fixed)", doc="fill-in-the-blank coreference, 2 options"),
    TaskSpec(
        "yelp", "others", "classification", "yelp sentence: {sentence}", ("sentence",),
        label_words=("negative", "positive"), train_size=560_000, eval_size=38_000, max_train=100_000,
        hub=HubSource("fancyzhx/yelp_polarity", eval="test", fields=(("sentence", "text"),)),
        local_train=_alt(LocalFile("train.csv", "csv", **_YELP_CSV)),
        local_eval=_alt((LocalFile("test.csv", "csv", **_YELP_CSV),
                         LocalFile("textfooler_yelp.txt", "label_prefixed",
                                   note="TextFooler sample of the test set, lower-cased")),
                        LocalFile("test.csv", "csv", **_YELP_CSV),
                        LocalFile("textfooler_yelp.txt", "label_prefixed")),
        aliases=("yelp_polarity", "yelp-2", "yelp2"), reference=f"{_DEPT} YelpPolarity",
        doc="Yelp review polarity; official test = evaluation set"),
    TaskSpec(
        "scitail", "others", "classification", "scitail premise: {premise} hypothesis: {hypothesis}",
        ("premise", "hypothesis"), label_words=("entailment", "neutral"), train_size=23_596, eval_size=1_304,
        hub=HubSource("allenai/scitail", "snli_format", fields=tuple(_SCITAIL.items())),
        local_train=_alt(_jsonl("snli_format/scitail_1.0_train.txt", **_SCITAIL)),
        local_eval=_alt(_jsonl("snli_format/scitail_1.0_dev.txt", **_SCITAIL)),
        reference=f"{_DEPT} SciTail (snli_format)", doc="science-exam entailment"),
    TaskSpec(
        "paws", "others", "classification", "paws sentence1: {sentence1} sentence2: {sentence2}",
        ("sentence1", "sentence2"), label_words=("not_paraphrase", "paraphrase"),
        train_size=49_401, eval_size=8_000, hub=HubSource("google-research-datasets/paws", "labeled_final"),
        local_train=_alt(_tsv("train.tsv", _PAIR)),
        local_eval=_alt(_tsv("dev.tsv", _PAIR)),
        aliases=("paws-wiki", "paws_wiki"), reference=f"{_DEPT} PAWS (labeled_final)",
        doc="PAWS-Wiki adversarial paraphrase"),
]

# Natural-language templates for decoder-only LMs (`--template natural`): the task said in words,
# ending in its own answer cue, with everyday label words (same order as the T5 ones). A causal LM
# never saw T5's "sst2 sentence:" prefixes; these are the lm-evaluation-harness / PromptSource style.
_YES_NO, _TF = ("no", "yes"), ("true", "false")
_NLI3 = "{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:"
_PAIR_SAME = "Sentence 1: {sentence1}\nSentence 2: {sentence2}\nDo both sentences mean the same thing?\nAnswer:"
_QA = "Context: {context}\nQuestion: {question}\nAnswer:"
NATURAL = {
    "boolq": ("{passage}\nQuestion: {question}?\nAnswer:", _YES_NO),
    "cb": (_NLI3, ("true", "false", "neither")),  # entailment, contradiction, neutral
    "multirc": ('{paragraph}\nQuestion: {question}\nIs the answer "{answer}" correct?\nAnswer:', _YES_NO),
    "wic": ('Sentence 1: {sentence1}\nSentence 2: {sentence2}\nDoes the word "{word}" mean the same thing in both '
            'sentences?\nAnswer:', _YES_NO),
    "wsc": ("{text}\nIn the passage above, does the pronoun marked # refer to the words marked *?\nAnswer:", _YES_NO),
    "cola": ("Sentence: {sentence}\nIs this sentence grammatically acceptable?\nAnswer:", _YES_NO),
    "sst2": ("Review: {sentence}\nSentiment:", ()),
    "mrpc": (_PAIR_SAME, _YES_NO),
    "stsb": ("Sentence 1: {sentence1}\nSentence 2: {sentence2}\nSimilarity from 0 to 5:", ()),
    "qqp": ("Question 1: {question1}\nQuestion 2: {question2}\nDo both questions ask the same thing?\nAnswer:",
            _YES_NO),
    "mnli": (_NLI3, ("true", "neither", "false")),  # entailment, neutral, contradiction
    "qnli": ("Question: {question}\nSentence: {sentence}\nDoes the sentence answer the question?\nAnswer:",
             ("yes", "no")),  # entailment, not_entailment
    "rte": ("{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:", _TF),
    **{name: (_QA, ()) for name in ("nq", "hotpotqa", "searchqa", "newsqa")},
    "winogrande": ("{sentence}\nOption 1: {option1}\nOption 2: {option2}\nWhich option fills the blank _?\nAnswer:",
                   ("1", "2")),
    "yelp": ("Review: {sentence}\nSentiment:", ()),
    "scitail": ("{premise}\nQuestion: {hypothesis} True or False?\nAnswer:", _TF),  # entailment, neutral
    "paws": (_PAIR_SAME, _YES_NO),
}
SPECS = [replace(s, templates=(Template("natural", NATURAL[s.name][0], label_words=NATURAL[s.name][1],
                                        doc="natural language, for decoder-only LMs"),))
         if s.name in NATURAL else s for s in SPECS]

for _spec in SPECS:
    TASKS.register(_spec.name, _spec, *_spec.aliases)


def get_task(name: str) -> TaskSpec:
    """The spec of a task by name or alias; unknown names list the known ones."""
    return TASKS.get(name)


def task_names(tag: str | None = None) -> list[str]:
    """Task names in the paper's order; `tag` in glue | superglue | mrqa | others | paper21."""
    if tag is None or tag == "paper21":
        return TASKS.names()
    if tag not in TAGS:
        raise ValueError(f"unknown task tag {tag!r}; allowed: {', '.join(TAGS)}")
    return [name for name, spec in TASKS.items() if spec.benchmark == tag]
