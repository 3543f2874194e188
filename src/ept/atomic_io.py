"""Atomic file writes: write a unique temp file, fsync, rename. A killed process never leaves a
half-written file that looks complete, and two writers never share a temp file. Torch-free
(tensors are written with safetensors, imported when used)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def _tmp_name(path: Path) -> Path:
    # Unique per write: two writers (threads, processes) never share a temp file.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_text(path, text: str) -> None:
    """Write then rename, so a killed process never leaves a half-written file that looks complete.
    `open(.., "x")` creates the temp file with the mode `open` gives any file (umask applied by the
    OS), so no process-wide umask lookup is needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "x") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk says only "[Errno 28] No space left on device": name the file
        raise OSError(f"{path}: cannot write ({err}); the previous version of the file, if any, is intact") from None
    finally:
        tmp.unlink(missing_ok=True)


def file_digest(data) -> str:
    """"sha256:<hex>" of a file (a path) or of bytes: what a checkpoint's state.json records of the
    files it was written with, so a mixed checkpoint is caught (`ept.training.checkpointer`)."""
    import hashlib

    if not isinstance(data, (bytes, bytearray)):
        data = Path(data).read_bytes()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_tensors(path, tensors: dict, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except Exception as err:  # safetensors' SafetensorError on a full disk names no path
        raise OSError(f"{path}: cannot write ({err}); the previous version of the file, if any, is intact") from None
    finally:
        tmp.unlink(missing_ok=True)
