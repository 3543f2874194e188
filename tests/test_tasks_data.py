"""Loaders, split protocol and few-shot sampling on the real shared data and on tiny fixtures.

The shared data (../shared/data, or $EPT_DATA_DIR) is read-only and not in the repository:
those tests skip when it is absent. Tasks missing there have hand-written files in their
original formats under tests/fixtures/data/ that go through the same loaders.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from ept.tasks import DataError, Example, MissingDataError, RowError, few_shot, get_task, load_task
from ept.tasks.splits import RawSplits, apply_protocol, shuffled_indices

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def _shared_dir() -> Path | None:
    for candidate in (os.environ.get("EPT_DATA_DIR"), Path(__file__).resolve().parents[1] / "../shared/data"):
        if candidate and (Path(candidate) / "MANIFEST.md").is_file():
            return Path(candidate).resolve()
    return None


SHARED = _shared_dir()


@functools.lru_cache(maxsize=None)
def shared(name: str):
    """Each shared task is read once per test session (sst2 is 67K rows)."""
    return load_task(name, data_dir=SHARED, source="local")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Nothing here may touch the network, even by mistake."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

needs_shared = pytest.mark.skipif(SHARED is None, reason="shared data (../shared/data or $EPT_DATA_DIR) not present")

# task -> (train, validation, test) after the protocol with seed 42, from the MANIFEST counts:
# halve: validation = len(dev) // 2; sample: 1K from a full train; documented fallbacks otherwise.
SHARED_SIZES = {
    "cola": (8_551, 521, 522),          # train.tsv 7,250 + val.tsv 1,301; dev 1,043 halved
    "sst2": (66_349, 1_000, 872),       # train.tsv 60,614 + train_heldout.tsv 6,735; 1K sampled
    "mrpc": (3_668, 204, 204),
    "stsb": (5_749, 750, 750),
    "qqp": (18_799, 2_349, 2_349),      # 23,497 held-out train pairs: val and test carved, n // 10 each
    "mnli": (0, 1_000, 1_000),          # TextFooler samples: mismatched = validation, matched = test
    "qnli": (0, 2_731, 2_732),          # dev only: halved
    "rte": (2_490, 138, 139),           # train.tsv 2,127 + val.tsv 363
    "boolq": (32, 1_635, 1_635),        # FewGLUE train only; val 3,270 halved
    "cb": (250, 28, 28),
    "wic": (5_428, 319, 319),           # re-formatted train 5,228 + 200
    "wsc": (554, 52, 52),
    "multirc": (154, 167, 4_848),       # FewGLUE 32 passages; dev32 as validation; val as test
    "newsqa": (0, 8, 9),                # 17-question MRQA sample, halved
    "winogrande": (0, 633, 634),
    "yelp": (180, 20, 1_020),           # train.csv 200 (20 carved); test.csv 20 + TextFooler 1,000
}

@needs_shared
@pytest.mark.parametrize("name", sorted(SHARED_SIZES))
def test_shared_task_sizes_and_labels(name):
    data = shared(name)
    assert (len(data.train), len(data.validation), len(data.test)) == SHARED_SIZES[name]
    assert data.bad_rows == 0
    assert data.source.startswith(f"local:{SHARED / name}")
    spec = data.spec
    examples = data.train + data.validation + data.test
    for ex in examples:
        if spec.kind == "classification":
            assert ex.target == spec.label_words[ex.label]
        elif spec.kind == "generation":
            assert ex.answers and ex.target == ex.answers[0]
        assert ex.source.startswith(f"{name} ")
    if spec.kind == "classification":
        seen = {ex.target for ex in examples}
        assert seen == set(spec.label_words), f"{name}: labels seen {seen}"
    # the validation and test sets never overlap (same object = same row)
    assert not {id(e) for e in data.validation} & {id(e) for e in data.test}


@needs_shared
def test_shared_label_counts_match_manifest():
    wsc = shared("wsc")
    assert Counter(ex.target for ex in wsc.train) == {"false": 295, "true": 259}
    wino = shared("winogrande")
    assert Counter(ex.target for ex in wino.validation + wino.test) == {"option1": 628, "option2": 639}
    mrc = shared("multirc")
    assert Counter(ex.target for ex in mrc.test) == {"false": 2_773, "true": 2_075}
    assert len({ex.group for ex in mrc.test}) == 953
    wic = shared("wic")
    assert Counter(ex.target for ex in wic.train) == {"false": 2_714, "true": 2_714}
    stsb = shared("stsb")
    assert all(0.0 <= ex.label <= 5.0 and ex.target in stsb.spec.label_words for ex in stsb.train)


@needs_shared
def test_shared_known_defects_are_handled_deliberately():
    qqp = shared("qqp")
    assert any("line 1: missing tab before the label repaired" in n for n in qqp.notes)
    assert any("no official validation" in n for n in qqp.notes)
    yelp = shared("yelp")  # the extra "0,1" first line is not an example
    assert len(yelp.train) + len(yelp.validation) == 200
    sst2 = shared("sst2")
    assert any("train.tsv+train_heldout.tsv: 67,349 examples, the full official set" in n for n in sst2.notes)
    boolq = shared("boolq")
    assert any("FewGLUE 32-shot subset" in n for n in boolq.notes)


@needs_shared
def test_shared_split_is_deterministic_and_seeded():
    a, b = load_task("rte", data_dir=SHARED, seed=42), load_task("rte", data_dir=SHARED, seed=42)
    c = load_task("rte", data_dir=SHARED, seed=1)
    assert [e.source for e in a.validation] == [e.source for e in b.validation]
    assert [e.source for e in a.validation] != [e.source for e in c.validation]
    assert sorted(e.source for e in a.validation + a.test) == sorted(e.source for e in c.validation + c.test)


@needs_shared
def test_shared_wic_reformatted_train_is_parsed_into_fields():
    wic = shared("wic")
    ex = wic.train[0]
    assert ex.source.startswith("wic sentence1: ") and " word: " in ex.source
    assert len(ex.fields) == 3 and not ex.fields[2].endswith(".")


# ----------------------------------------------------------------- fixtures for absent tasks

FIXTURE_TASKS = {  # task -> (train, validation, test, labels or None)
    "nq": (7, 1, 2, None), "hotpotqa": (7, 1, 2, None), "searchqa": (7, 1, 2, None),
    "winogrande": (7, 1, 2, {"option1", "option2"}), "scitail": (7, 1, 2, {"entailment", "neutral"}),
    "paws": (7, 1, 2, {"paraphrase", "not_paraphrase"}), "qqp": (7, 1, 2, {"duplicate", "not_duplicate"}),
    "mnli": (8, 2, 2, {"entailment", "neutral", "contradiction"}), "qnli": (6, 1, 1, {"entailment", "not_entailment"}),
    "boolq": (4, 1, 1, {"true", "false"}), "multirc": (9, 1, 5, {"true", "false"}),
    "yelp": (7, 1, 2, {"positive", "negative"}),
}


@pytest.mark.parametrize("name", sorted(FIXTURE_TASKS))
def test_fixture_task_loads_through_the_same_loader(name):
    n_train, n_val, n_test, labels = FIXTURE_TASKS[name]
    data = load_task(name, data_dir=FIXTURES, source="local")
    assert (len(data.train), len(data.validation), len(data.test)) == (n_train, n_val, n_test)
    examples = data.train + data.validation + data.test
    if labels:
        assert {ex.target for ex in examples} <= labels
    else:
        assert all(ex.answers and ex.label is None for ex in examples)


def test_fixture_formats_are_parsed_faithfully():
    yelp = load_task("yelp", data_dir=FIXTURES)
    texts = {ex.fields[0]: ex.target for ex in yelp.train + yelp.validation + yelp.test}
    assert texts['Waited an hour for a "quick" lunch.'] == "negative"       # csv "" escape, class 1
    assert texts["Best coffee in town. Highly recommended."] == "positive"   # \n escapes, class 2
    mnli = load_task("mnli", data_dir=FIXTURES)  # header-named GLUE columns (12 train / 16 dev)
    assert mnli.validation[0].fields[0].endswith(".") and "(" not in mnli.validation[0].source
    assert any("extra dev set" in n for n in mnli.notes)
    nq = load_task("nq", data_dir=FIXTURES)
    both = [ex for ex in nq.train + nq.validation + nq.test if len(ex.answers) == 2]
    assert both, "all gold answers are kept"
    mrc = load_task("multirc", data_dir=FIXTURES)
    assert Counter(ex.group for ex in mrc.test) == {"2-4": 2, "2-5": 3}
    assert all("<b>" not in ex.source and "<br>" not in ex.source for ex in mrc.test)


def test_mrqa_gzip_files(tmp_path):
    import gzip

    root = tmp_path / "hotpotqa"
    for split in ("train", "dev"):
        (root / split).mkdir(parents=True)
        text = (FIXTURES / "hotpotqa" / split / "HotpotQA.jsonl").read_bytes()
        (root / split / "HotpotQA.jsonl.gz").write_bytes(gzip.compress(text))
    data = load_task("hotpotqa", data_dir=tmp_path, source="local")
    assert data.sizes() == {"train": 7, "validation": 1, "test": 2}
    assert "HotpotQA.jsonl.gz" in data.source


# ----------------------------------------------------------------- malformed rows and files


def _write(tmp_path: Path, task: str, name: str, text: str) -> Path:
    path = tmp_path / task / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
RTE_DEV = RTE_HEADER + "".join(f"{i}\tA{i}.\tB{i}.\tentailment\n" for i in range(4))


@pytest.mark.parametrize("bad_line,problem", [
    ("9\tonly two\n", "expected 4 tab-separated columns (unused, sentence1, sentence2, label), got 2"),
    ("9\tA.\tB.\tmaybe\n", "label 'maybe' not in the label set; expected one of ['entailment', 'not_entailment']"),
])
def test_bad_tsv_row_names_file_and_line(tmp_path, bad_line, problem):
    _write(tmp_path, "rte", "train.tsv", RTE_HEADER + "0\tA.\tB.\tentailment\n" + bad_line + "1\tC.\tD.\t1\n")
    _write(tmp_path, "rte", "dev.tsv", RTE_DEV)
    with pytest.raises(RowError) as err:
        load_task("rte", data_dir=tmp_path)
    assert str(err.value).startswith("rte/train.tsv, line 3: ") and problem in str(err.value)
    assert (err.value.file, err.value.line) == ("rte/train.tsv", 3)
    data = load_task("rte", data_dir=tmp_path, skip_bad_rows=True)
    assert data.bad_rows == 1 and len(data.train) == 2
    assert any("skipped 1 malformed row" in n and "line 3" in n for n in data.notes)


def test_non_numeric_stsb_score(tmp_path):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    row = "0\tg\tf\ty\to\tn\tn\tA.\tB.\t{}\n"
    _write(tmp_path, "stsb", "train.tsv", head + row.format("3.2") + row.format("high"))
    _write(tmp_path, "stsb", "dev.tsv", head + row.format("1.0") + row.format("7.5"))
    with pytest.raises(RowError, match=r"stsb/train.tsv, line 3: expected a numeric score in \[0.0, 5.0\], got 'high'"):
        load_task("stsb", data_dir=tmp_path)
    assert load_task("stsb", data_dir=tmp_path, skip_bad_rows=True).bad_rows == 2
    (tmp_path / "stsb" / "train.tsv").write_text(head + row.format("3.2"))
    with pytest.raises(RowError, match=r"stsb/dev.tsv, line 3: expected a score in \[0.0, 5.0\], got '7.5'"):
        load_task("stsb", data_dir=tmp_path)


def test_broken_json_and_missing_field(tmp_path):
    good = '{"premise": "P.", "hypothesis": "H.", "label": "neutral", "idx": 0}\n'
    _write(tmp_path, "cb", "train.jsonl", good + '{"premise": "P.", "hypothesis": \n' + good)
    _write(tmp_path, "cb", "val.jsonl", good + '{"premise": "P.", "label": "neutral"}\n')
    with pytest.raises(RowError, match=r"cb/train.jsonl, line 2: broken JSON"):
        load_task("cb", data_dir=tmp_path)
    (tmp_path / "cb" / "train.jsonl").write_text(good * 2)
    with pytest.raises(RowError, match=r"cb/val.jsonl, line 2: missing field 'hypothesis'"):
        load_task("cb", data_dir=tmp_path)
    data = load_task("cb", data_dir=tmp_path, skip_bad_rows=True)
    assert data.bad_rows == 1


def test_bad_csv_rows(tmp_path):
    _write(tmp_path, "yelp", "train.csv", '0,1\n"1","fine"\n"1","a","b"\n"3","odd class"\n"2","multi\nline"\n')
    _write(tmp_path, "yelp", "test.csv", '"2","good"\n')
    with pytest.raises(RowError, match=r"yelp/train.csv, line 3: expected 2 comma-separated columns \(label, sentence\), got 3"):
        load_task("yelp", data_dir=tmp_path)
    data = load_task("yelp", data_dir=tmp_path, skip_bad_rows=True)
    assert data.bad_rows == 2  # line 3 (3 columns) and line 4 (class "3" is not 1/2)
    assert sorted(ex.fields[0] for ex in data.train + data.validation) == ["fine", "multi line"]
    (tmp_path / "yelp" / "train.csv").write_text('"3","odd class"\n"2","ok"\n')  # no "0,1" line: nothing skipped
    with pytest.raises(RowError, match=r"yelp/train.csv, line 1: label '3' not in the label set; expected one of \['1', '2'\]"):
        load_task("yelp", data_dir=tmp_path)


def test_empty_and_missing_files_and_unknown_task(tmp_path):
    _write(tmp_path, "rte", "train.tsv", "")
    _write(tmp_path, "rte", "dev.tsv", RTE_DEV)
    with pytest.raises(DataError, match="rte/train.tsv: file is empty"):
        load_task("rte", data_dir=tmp_path)
    with pytest.raises(MissingDataError, match="no local files for task 'cola'.*looked for: dev.tsv"):
        load_task("cola", data_dir=tmp_path, source="local")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task("cola", data_dir=tmp_path / "nowhere")
    with pytest.raises(KeyError, match="unknown task 'glue'.*Allowed: boolq"):
        load_task("glue", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown source"):
        load_task("rte", data_dir=tmp_path, source="web")


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EPT_DATA_DIR", str(FIXTURES))
    assert load_task("paws").source.startswith(f"local:{FIXTURES.resolve() / 'paws'}")


# ----------------------------------------------------------------- the protocol itself


def _examples(n: int, labels: int = 2, tag: str = "x") -> list[Example]:
    return [Example(f"{tag}{i}", "t", i % labels, (f"{tag}{i}",)) for i in range(n)]


def test_protocol_halves_validation_for_small_tasks():
    spec = get_task("rte")
    raw = RawSplits(train=_examples(30), eval=_examples(11, tag="v"), train_complete=True)
    split = apply_protocol(spec, raw, seed=42)
    assert (len(split.train), len(split.validation), len(split.test)) == (30, 5, 6)
    order = shuffled_indices(11, 42)  # DePT: first len // 2 of torch.randperm -> validation
    assert [e.source for e in split.validation] == [f"v{i}" for i in order[:5]]
    assert sorted(e.source for e in split.validation + split.test) == sorted(f"v{i}" for i in range(11))


def test_protocol_samples_1k_from_a_full_train():
    spec = dataclasses.replace(get_task("sst2"), train_size=3_000 * 5)
    raw = RawSplits(train=_examples(15_000), eval=_examples(50, tag="v"), train_complete=True)
    split = apply_protocol(spec, raw, seed=7)
    assert (len(split.train), len(split.validation), len(split.test)) == (14_000, 1_000, 50)
    assert split.rule == "1K from train"
    assert not {e.source for e in split.train} & {e.source for e in split.validation}
    order = shuffled_indices(15_000, 7)
    assert [e.source for e in split.validation[:3]] == [f"x{i}" for i in order[:3]]


def test_mnli_prefers_its_own_mismatched_validation():
    # DePT's split map: validation_mismatched / validation_matched, the full train kept
    spec = dataclasses.replace(get_task("mnli"), train_size=20_000)  # the sampling rule
    raw = RawSplits(train=_examples(20), eval=_examples(4, tag="m"), dev=_examples(3, tag="mm"), train_complete=True)
    split = apply_protocol(spec, raw, seed=42)
    assert (len(split.train), len(split.validation), len(split.test)) == (20, 3, 4)
    assert split.rule == "dev as val" and split.validation[0].source.startswith("mm")
    plain = apply_protocol(dataclasses.replace(get_task("sst2"), train_size=20_000), raw, seed=42)
    assert plain.rule == "1K from train"  # a task without prefer_dev samples from its full train


def test_table5_protocol_differs_from_b1_only_where_table5_does():
    from ept.tasks.splits import TABLE5, protocol_rule

    # MNLI: Table 5 samples validation from its full train (no mismatched), matched is the test
    spec = dataclasses.replace(get_task("mnli"), train_size=20_000)
    raw = RawSplits(train=_examples(2_000), eval=_examples(4, tag="m"), dev=_examples(3, tag="mm"), train_complete=True)
    assert apply_protocol(spec, raw, 42).rule == "dev as val"
    t5 = apply_protocol(spec, raw, 42, protocol="table5")
    assert t5.rule == "1K from train" and (len(t5.train), len(t5.validation), len(t5.test)) == (1_000, 1_000, 4)
    # PAWS (train 49,401): B.1 samples 1K from train, Table 5 halves the official validation
    paws = RawSplits(train=_examples(2_000), eval=_examples(10, tag="v"), train_complete=True)
    assert apply_protocol(get_task("paws"), paws, 42).rule == "1K from train"
    halved = apply_protocol(get_task("paws"), paws, 42, protocol="table5")
    assert (len(halved.train), len(halved.validation), len(halved.test)) == (2_000, 5, 5)
    # every other task: the same rule under both protocols
    for name in ("cola", "sst2", "rte", "boolq", "multirc", "qqp", "qnli", "yelp", "nq"):
        assert name not in TABLE5 and protocol_rule(get_task(name), "table5") == protocol_rule(get_task(name), "b1")
    with pytest.raises(ValueError, match="split_protocol='t5'; allowed: b1, table5"):
        apply_protocol(get_task("rte"), raw, 42, protocol="t5")
    with pytest.raises(ValueError, match="unknown split protocol 't5'"):
        load_task("rte", data_dir=FIXTURES, split_protocol="t5")


def test_protocol_caps_yelp_train():
    spec = dataclasses.replace(get_task("yelp"), train_size=12_000, max_train=5_000)
    split = apply_protocol(spec, RawSplits(train=_examples(12_000), eval=_examples(5), train_complete=True), 0)
    assert (len(split.train), len(split.validation), len(split.test)) == (5_000, 1_000, 5)


def test_torch_randperm_matches_dept():
    import torch

    g = torch.Generator()
    g.manual_seed(42)
    assert shuffled_indices(100, 42) == torch.randperm(100, generator=g).tolist()


# ----------------------------------------------------------------- few-shot


def test_few_shot_is_balanced_and_seeded():
    examples = _examples(100, labels=3)
    shots = few_shot(examples, 4, seed=0)
    assert Counter(ex.label for ex in shots) == {0: 4, 1: 4, 2: 4}
    assert [e.source for e in few_shot(examples, 4, seed=0)] == [e.source for e in shots]
    assert {e.source for e in few_shot(examples, 4, seed=1)} != {e.source for e in shots}
    small = _examples(3, labels=3)
    assert len(few_shot(small, 16, seed=0)) == 3  # a class with fewer than k gives all it has
    floats = [Example(str(i), "1.0", float(i) / 10, ("a",)) for i in range(50)]
    assert len(few_shot(floats, 16, seed=0)) == 16  # regression: k in total
    with pytest.raises(ValueError, match="positive"):
        few_shot(examples, 0, seed=0)


def test_load_task_few_shot():
    data = load_task("scitail", data_dir=FIXTURES, few_shot_k=2, seed=3)
    assert Counter(ex.target for ex in data.train) == {"entailment": 2, "neutral": 2}
    assert any(n.startswith("few-shot: 4 training examples (2 per class, sample seed 3)") for n in data.notes)


@needs_shared
def test_few_shot_sample_follows_the_run_seed_and_evaluation_does_not():
    """Paper §5.2: each of the 6 runs draws its own k-per-class sample; validation/test stay put."""
    runs = {s: load_task("rte", data_dir=SHARED, source="local", few_shot_k=16, sample_seed=s) for s in (0, 1)}
    train0, train1 = ({e.source for e in runs[s].train} for s in (0, 1))
    assert len(train0) == len(train1) == 32 and train0 != train1
    assert Counter(e.label for e in runs[1].train) == {0: 16, 1: 16}
    for split in ("validation", "test"):
        assert [e.source for e in getattr(runs[0], split)] == [e.source for e in getattr(runs[1], split)]
        assert [e.source for e in getattr(runs[0], split)] == [e.source for e in getattr(shared("rte"), split)]
    # the same run seed draws the same sample again (resumable, reproducible)
    again = load_task("rte", data_dir=SHARED, source="local", few_shot_k=16, sample_seed=0)
    assert [e.source for e in again.train] == [e.source for e in runs[0].train]
    # the note names the seed the sample was drawn with
    assert runs[0].notes[-1].endswith("(16 per class, sample seed 0) out of 2,490")


@needs_shared
def test_ept_train_draws_the_few_shot_sample_with_the_run_seed(tiny_bert, tmp_path, capsys):
    from ept.training.recipe import TrainConfig, run

    base = dict(task="rte", method="ept", backbone=tiny_bert, steps=1, eval_every=1, batch_size=4, few_shot=4,
                max_eval_examples=8, max_length=32, data_dir=str(SHARED), tensorboard=False)
    for seed in (3, 5):
        assert run(TrainConfig(seed=seed, out=str(tmp_path / f"s{seed}"), **base), progress=False)["status"] == "finished"
        assert f"(4 per class, sample seed {seed}) out of 2,490" in capsys.readouterr().out


# ----------------------------------------------------------------- hub (no network: a fake `datasets`)


def test_hub_source_is_mapped_without_network(monkeypatch):
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path == "allenai/winogrande":
            return [{"sentence": f"s{i} _ .", "option1": "a", "option2": "b", "answer": "12"[i % 2]} for i in range(12)]
        if path == "mrqa-workshop/mrqa":
            return [{"subset": s, "question": "q?", "context": "c.", "answers": ["a.", "b"]}
                    for s in ("NewsQA", "SearchQA") for _ in range(3)]
        if (path, name) == ("nyu-mll/glue", "mnli"):
            n = {"train": 12, "validation_matched": 5, "validation_mismatched": 3}[split]
            return [{"premise": f"{split} {i}", "hypothesis": "h", "label": i % 3} for i in range(n)]
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    wino = load_task("winogrande", source="hub")
    assert wino.source == "hub:allenai/winogrande/winogrande_xl"
    assert ("allenai/winogrande", "winogrande_xl", "validation") in calls
    assert {ex.target for ex in wino.validation + wino.test} == {"option1", "option2"}
    news = load_task("newsqa", source="hub")
    assert len(news.train) + len(news.validation) == 3 and news.test[0].answers == ("a .", "b")
    mnli = load_task("mnli", source="hub")
    assert mnli.sizes() == {"train": 12, "validation": 3, "test": 5}
    assert mnli.validation[0].fields[0].startswith("validation_mismatched")
    with pytest.raises(DataError, match="could not load nyu-mll/glue/rte split 'train' from the hub: offline"):
        load_task("rte", source="hub")
    # the fixtures have no rte folder: "auto" falls back to the hub and reports both problems
    with pytest.raises(DataError, match="no local files for task 'rte'.*hub fallback failed too"):
        load_task("rte", data_dir=FIXTURES)
