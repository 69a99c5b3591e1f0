"""Run the ``vocaseg`` command line in-process and capture what it prints."""

from vocaseg.cli.main import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``vocaseg ARGV...``, usage errors included."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err
