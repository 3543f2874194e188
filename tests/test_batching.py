"""Length-grouped training batches (a pure function of seed and step, so resuming is exact) and
length-sorted evaluation batches (results back in the rows' order), issue 13."""

from __future__ import annotations

import pytest
import torch

from ept.batching import GROUP_WINDOW, batches, feature_length, group_by_length, sorted_batches
from ept.kinds import encode
from ept.training.recipe import TrainConfig, batch_indices, setup_data


class _Scorer:
    """What RunData.encode needs of a scorer: its `encode` (here the encoder path of ept.batching)."""

    def __init__(self, tok):
        self.tok = tok

    def encode(self, examples, max_length):
        return encode(self.tok, examples, "encoder", max_length)


def _run_data(cfg, start, tok):
    return setup_data(cfg, start).encode(_Scorer(tok), cfg.max_length)


def _cfg(data_dir, **kw):
    base = dict(task="sst2", method="pt", steps=130, batch_size=16, max_length=64, max_eval_examples=8,
                data_dir=str(data_dir), group_by_length=True, seed=3)
    return TrainConfig(**{**base, **kw})


def _padding(tok, data, steps) -> float:
    """Padded slots / all slots of the input_ids over the given steps' batches."""
    pad = total = 0
    for s in steps:
        mask = data.batch(tok, s, 0, 1)["attention_mask"]
        pad, total = pad + int((mask == 0).sum()), total + mask.numel()
    return pad / total


def test_grouped_order_resumes_exactly_and_keeps_each_windows_rows(data_dir, minilm_tokenizer):
    tok = minilm_tokenizer
    full = _run_data(_cfg(data_dir), 0, tok)
    for k in (1, 49, 50, 77):  # mid-window, window ends and starts
        resumed = _run_data(_cfg(data_dir), k, tok)
        assert resumed.order == full.order[k:], k
    random = [batch_indices(len(full.task.train), 16, 3, s) for s in range(2 * GROUP_WINDOW)]
    for w in range(2):  # the same rows per window as the random order, not the same batches
        window = slice(w * GROUP_WINDOW, (w + 1) * GROUP_WINDOW)
        assert sorted(sum(full.order[window], [])) == sorted(sum(random[window], []))
        assert full.order[window] != random[window]
    assert all(len(b) == 16 for b in full.order) and len(full.order) == 130
    assert _run_data(_cfg(data_dir, seed=4), 0, tok).order != full.order


def test_grouped_batches_pad_less_than_random_ones_on_real_sst2(data_dir, minilm_tokenizer):
    tok = minilm_tokenizer
    grouped = _run_data(_cfg(data_dir, steps=100), 0, tok)
    random = _run_data(_cfg(data_dir, steps=100, group_by_length=False), 0, tok)
    g, r = _padding(tok, grouped, range(100)), _padding(tok, random, range(100))
    print(f"padding: grouped {g:.1%}, random {r:.1%}")
    assert r > 0.3 and g < r / 3  # measured here: random ~50%, grouped ~3%


def test_group_by_length_needs_whole_windows_and_is_pure():
    order = [[4 * s + j for j in range(4)] for s in range(GROUP_WINDOW)]
    length = lambda i: (i * 7919) % 13  # noqa: E731
    a = group_by_length(order, 0, length, seed=1)
    assert a == group_by_length(order, 0, length, seed=1) and a != group_by_length(order, 0, length, seed=2)
    assert all(max(map(length, b)) - min(map(length, b)) <= 1 for b in a)  # 200 rows, 13 lengths, batches of 4
    with pytest.raises(ValueError, match="first_step=3"):
        group_by_length(order, 3, length, seed=1)


def test_sorted_eval_batches_give_the_same_predictions_as_in_order(minilm, data_dir):
    import copy

    from ept.backbones import PromptedModel
    from ept.heads import make_scorer
    from ept.prompts import method_config
    from ept.tasks import load_task
    from ept.training.recipe import evaluate

    backbone, tok = minilm
    data = load_task("sst2", data_dir=str(data_dir))
    rows = data.validation[:40]
    torch.manual_seed(0)
    model = PromptedModel(copy.deepcopy(backbone), tok, method_config("pt")).eval()
    scorer = make_scorer(model, data.spec)
    enc = scorer.encode(rows, 128)
    in_order = [p for b in batches(tok, enc, 16) for p in scorer.predict(b)]
    out = [None] * len(enc)
    lengths = []
    for positions, b in sorted_batches(tok, enc, 16):
        lengths += [feature_length(enc.features[i]) for i in positions]
        for i, p in zip(positions, scorer.predict(b)):
            out[i] = p
    assert out == in_order and lengths == sorted(lengths, reverse=True)
    assert len(set(in_order)) == 2  # both labels predicted: the comparison can tell orders apart
    from ept.tasks import score

    assert evaluate(scorer, data.spec, tok, enc, rows, 16, "cpu") == score(data.spec, in_order, rows)
