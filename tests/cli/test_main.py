"""The command dispatcher: help, version, and one-line usage errors with exit code 2."""

import subprocess
import sys

import pytest

from vocaseg import __version__
from vocaseg.cli.main import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vocaseg {__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: vocaseg" in capsys.readouterr().out


def test_unknown_command_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_console_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "vocaseg", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "commands" in result.stdout
