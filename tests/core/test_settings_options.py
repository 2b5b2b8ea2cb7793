"""core.settings_options: command-line options typed and defaulted by the settings dataclass they fill."""
import argparse
from dataclasses import dataclass

import pytest

from fusedream_pack.fusedream_ops.core.settings_options import add_settings_options


@dataclass(frozen=True)
class _Settings:
    batch_size: int = 32
    lr: float = 2e-5
    mode: str = "paper"


def test_each_option_takes_the_field_type_default_and_dashed_name_and_its_help_can_show_the_default():
    """Reverted on a scratch copy: the ``type=`` (values stayed strings) and the dashed name (``--batch_size``);
    both failed here."""
    parser = argparse.ArgumentParser(prog="p")
    add_settings_options(parser, _Settings(), {"batch_size": "pairs per batch (%(default)s)", "lr": "rate",
                                               "mode": "basis (default %(default)s)"})
    assert vars(parser.parse_args([])) == {"batch_size": 32, "lr": 2e-5, "mode": "paper"}
    assert vars(parser.parse_args(["--batch-size", "4", "--lr", "0.5", "--mode", "official"])) == {
        "batch_size": 4, "lr": 0.5, "mode": "official"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--batch-size", "1.5"])
    help_text = " ".join(parser.format_help().split())
    assert "--batch-size BATCH_SIZE pairs per batch (32)" in help_text and "basis (default paper)" in help_text
