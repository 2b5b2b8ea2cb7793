"""Command-line options that mirror fields of a settings dataclass: the field's default is the option's default and
its type the option's type, so a command line cannot drift from the settings it fills."""
from __future__ import annotations

import argparse


def add_settings_options(parser: argparse.ArgumentParser, settings, helps: dict[str, str]) -> None:
    """One ``--name`` option per field of ``settings`` named in ``helps`` (``batch_size`` becomes ``--batch-size``),
    in that order. A help may show the default as ``%(default)s``."""
    for name, help_text in helps.items():
        default = getattr(settings, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default, help=help_text)
