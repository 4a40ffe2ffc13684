import subprocess
import sys

from symscale.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name.replace("_", "-") in out


def test_python_dash_m_works():
    res = subprocess.run([sys.executable, "-m", "symscale", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "symscale" in res.stdout
