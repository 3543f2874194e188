"""Shared fixtures: offline, CPU, loaded once per test session.

- `minilm`:  (BertModel, tokenizer) — the embedded all-MiniLM-L6-v2, real weights, eval mode.
- `tiny_t5`: (T5ForConditionalGeneration, tokenizer) — a 2-layer d_model=32 T5 built from a
  config with a fixed seed, paired with the MiniLM (BERT WordPiece) tokenizer because no T5
  tokenizer exists offline: pad = [PAD] (also the decoder start), eos = [SEP].
- `minilm_tokenizer`: that tokenizer alone (no weights loaded).
- `tiny_llama_dir`: a 2-layer Llama (the MiniLM tokenizer, [SEP] as EOS) saved as a backbone folder.
- `data_dir`: the real task data ($EPT_DATA_DIR, else ../shared/data beside the repo); tests that
  need it are skipped with a reason when it is absent.

The models are shared by every test of the session. A test that changes one in place (`.train()`,
`requires_grad_`, dtype, wrapping it in PEFT) should work on `copy.deepcopy(model)`; as a safety
net, `_reset_shared_models` puts both back in eval mode and frozen after each test that used them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tests never touch the network: a missing local file must fail fast, not retry the hub for 30 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The MiniLM (BERT WordPiece, uncased) tokenizer alone: cheap, no weights."""
    from transformers import AutoTokenizer

    from ept.backbones import embedded_minilm_path

    return AutoTokenizer.from_pretrained(embedded_minilm_path())


@pytest.fixture(scope="session")
def minilm(minilm_tokenizer):
    from transformers import AutoModel

    from ept.backbones import embedded_minilm_path

    model = AutoModel.from_pretrained(embedded_minilm_path(), use_safetensors=True)
    model.eval().requires_grad_(False)
    return model, minilm_tokenizer


@pytest.fixture(scope="session")
def tiny_t5(minilm_tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    tok = minilm_tokenizer
    config = T5Config(vocab_size=tok.vocab_size, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
                      decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.sep_token_id)
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the session's RNG
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(config)
    model.eval().requires_grad_(False)
    return model, tok


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = Path(os.environ.get("EPT_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not root.is_dir():
        pytest.skip(f"task data not found at {root} (set EPT_DATA_DIR to the folder of <task>/ data)")
    return root


@pytest.fixture(scope="session")
def mini_data(data_dir, tmp_path_factory) -> Path:
    """The header and first 300 train / 60 dev rows of the real SST-2 and CoLA files: real data
    that loads in a blink. The one mini data folder of the suite (train, sweep, analysis, report)."""
    root = tmp_path_factory.mktemp("mini-data")
    for task in ("sst2", "cola"):
        (root / task).mkdir()
        for name, n in (("train.tsv", 300), ("dev.tsv", 60)):
            lines = (data_dir / task / name).read_text().splitlines(keepends=True)
            (root / task / name).write_text("".join(lines[: n + 1]))
    return root


@pytest.fixture(autouse=True)
def _reset_shared_models(request):
    yield
    for name in ("minilm", "tiny_t5"):
        if name in request.fixturenames:
            model = request.getfixturevalue(name)[0]
            model.eval().requires_grad_(False)


def _save_tiny(path, model_cls, config_fn):
    """A tiny model built from a config, saved with MiniLM's tokenizer as a local folder: a
    backbone that `ept train --backbone PATH` loads by path, in seconds, offline."""
    from transformers import AutoTokenizer

    from ept.backbones import embedded_minilm_path

    tok = AutoTokenizer.from_pretrained(embedded_minilm_path())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model_cls(config_fn(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT (hidden 32) folder: the encoder-only backbone of the run-folder tests."""
    from transformers import BertConfig, BertModel

    return _save_tiny(tmp_path_factory.mktemp("tiny-bert"), BertModel, lambda tok: BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory):
    """A tiny T5 (d_model 32) folder with the WordPiece tokenizer (pad = decoder start, eos = [SEP])."""
    from transformers import T5Config, T5ForConditionalGeneration

    return _save_tiny(tmp_path_factory.mktemp("tiny-t5"), T5ForConditionalGeneration, lambda tok: T5Config(
        vocab_size=tok.vocab_size, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
        decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run ~3x faster on one thread (no oversubscription).
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A 2-layer Llama with the WordPiece tokenizer ([SEP] as EOS), saved as a backbone folder
    (test_causal.py has its own, built from its `tiny_llama`)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ept.backbones import embedded_minilm_path

    tok = AutoTokenizer.from_pretrained(embedded_minilm_path())
    tok.eos_token = "[SEP]"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.sep_token_id, tie_word_embeddings=True))
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
