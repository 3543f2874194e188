"""Every subcommand answers --help with examples; ls and env run offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ept.cli import COMMANDS, build_parser, main


def _registered():
    parser = build_parser()
    return [name for name in COMMANDS if name in parser._subparsers._group_actions[0].choices]


def test_every_listed_command_is_registered():
    assert _registered() == COMMANDS


@pytest.mark.parametrize("name", COMMANDS)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ept " + name)


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "train" in capsys.readouterr().out


def test_ls_lists_methods_backbones_and_tasks(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for word in ("ept_star", "resprompt", "minilm", "t5-base", "sst2", "multirc"):
        assert word in out


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["torch"] and env["ept"]


def test_env_says_whether_cpu_bf16_is_native(capsys):
    """env.json's "bf16" on a CPU is whether bf16 is native (AMX / AVX512-BF16), checked against
    the kernel's own CPU flags: it once said true on an AVX2-only CPU, where bf16 is ~20x slower."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or torch.cuda.is_available():
        pytest.skip("needs a Linux CPU-only machine (/proc/cpuinfo)")
    flags = set(cpuinfo.read_text().split())
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["device"] == "cpu"
    assert env["bf16"] == bool(flags & {"avx512_bf16", "amx_bf16"}), env["cpu_bf16"]


def test_env_git_is_dirty_for_changed_code_not_for_changed_results(tmp_path):
    """env.json's ept_git says "-dirty" when tracked code differs from the commit; a committed run
    folder that a running experiment rewrites does not count (it once marked every run dirty)."""
    import subprocess

    from ept.envinfo import _git_commit

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout

    (tmp_path / "src").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "src" / "m.py").write_text("x = 1\n")
    (tmp_path / "results" / "steps.jsonl").write_text("{}\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = git("rev-parse", "HEAD").strip()
    assert _git_commit(tmp_path) == head
    (tmp_path / "results" / "steps.jsonl").write_text("{}\n{}\n")
    (tmp_path / "results" / "new.json").write_text("{}")
    assert _git_commit(tmp_path) == head
    (tmp_path / "src" / "m.py").write_text("x = 2\n")
    assert _git_commit(tmp_path) == head + "-dirty"
