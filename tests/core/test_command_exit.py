"""core.command_exit: how every command ends when stopped early (a bad input: 2, Ctrl-C: 130, never a traceback)."""
from fusedream_pack.fusedream_ops.core.command_exit import exit_code
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError


def test_a_bad_input_prints_its_message_and_exits_2_and_ctrl_c_prints_the_note_and_exits_130(capsys):
    """Reverted on a scratch copy: the KeyboardInterrupt branch (Ctrl-C then printed the interrupt's empty text and
    returned 2); failed here."""
    assert exit_code(FuseDreamError("--k must be at least 1.")) == 2
    assert capsys.readouterr() == ("", "[FuseDream] --k must be at least 1.\n")
    assert exit_code(KeyboardInterrupt(), "interrupted; nothing was written.") == 130
    assert capsys.readouterr() == ("", "interrupted; nothing was written.\n")
