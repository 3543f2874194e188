"""The environment a run (or a bug report) happened in: versions, platform, device, data root.

`collect_env()` is what `ept env` prints and what every run folder saves as `env.json`
(STYLE house rule 12: runs describe themselves). Cheap and offline: no model is loaded.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "datasets", "numpy")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# What "-dirty" looks at: the code a run executes. Not the whole tree: committed run folders
# (results/...) change under every running experiment, and counting them marked each of its runs
# "-dirty" whatever the code was.
CODE_PATHS = ("src", "pyproject.toml")


def _git_commit(root: Path | None = None) -> str | None:
    """The ept checkout's commit (+ "-dirty" if tracked code under CODE_PATHS differs from it), or
    None outside a git checkout."""
    root = root or Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                                "--", *CODE_PATHS], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def _device() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"device": "cuda", "device_name": torch.cuda.get_device_name(0), "device_count": torch.cuda.device_count(),
                "cuda": torch.version.cuda, "bf16": bool(torch.cuda.is_bf16_supported())}
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return {"device": "mps", "device_name": "Apple MPS", "device_count": 1, "cuda": None, "bf16": True}
    # CPU: bf16 runs on every recent torch, but "bf16" says whether it is NATIVE (AMX / AVX512-BF16),
    # as `--precision auto` decides: on an AVX2-only CPU bf16 is 17-20x slower than fp32, so a result
    # must say which kind of machine it ran on.
    from ept.precision import fast_low_precision

    native, hardware = fast_low_precision(torch.device("cpu"))
    return {"device": "cpu", "device_name": platform.processor() or platform.machine(), "device_count": 0,
            "cuda": None, "bf16": native, "cpu_bf16": hardware}


def _data_root() -> str | None:
    """Where task data is read from ($EPT_DATA_DIR, else ../shared/data), or None if absent."""
    try:
        from ept.tasks import MissingDataError, resolve_data_dir
    except ImportError:  # the tasks package is optional for this report
        path = os.environ.get("EPT_DATA_DIR")
        return path if path and Path(path).is_dir() else None
    try:
        return str(resolve_data_dir())
    except MissingDataError:
        return None


def collect_env() -> dict:
    """Versions, platform, device and data root as a flat, JSON-ready dict."""
    import torch

    from ept import __version__

    env = {"ept": __version__, "ept_git": _git_commit()}
    env.update({name: _version(name) for name in PACKAGES})
    env["torch"] = torch.__version__  # the build string (e.g. 2.13.0+cpu), not just the dist version
    env.update({
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "torch_threads": torch.get_num_threads(),
    })
    env.update(_device())
    env["data_root"] = _data_root()
    return env


def format_env(env: dict) -> str:
    """`key: value` lines, ready to paste into an issue."""
    width = max(len(k) for k in env)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in env.items())
