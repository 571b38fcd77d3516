"""Every command's --help shows an example (a user's first stop)."""

import pytest
from typer.testing import CliRunner

from sparsesync.cli import _register, app

_register()

COMMANDS = [["plan"], ["show"], ["execute"], ["finalize"], ["verify"], ["run"], ["bench"], ["demo"], ["fixtures", "create"], ["fixtures", "drop"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_an_example(command):
    res = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert res.exit_code == 0
    assert "Example" in res.stdout and "sparsesync " + command[0] in res.stdout
