"""Every subcommand answers --help with examples; ls and env run offline."""

from __future__ import annotations

import json

import pytest

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
