"""``weightscope completion bash|zsh|fish``: the shell's tab-completion script for weightscope,
generated from the command line's own parser by shtab (commands, options, their choices, file
names where a command takes a file)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from weightscope.cli.options import Formatter, examples, usage

SHELLS = ("bash", "zsh", "fish")

EPILOG = examples(
    ("completion bash > ~/.local/share/bash-completion/completions/weightscope",
     "bash, for every new shell (or: source <(weightscope completion bash))"),
    ("completion zsh > ~/.zfunc/_weightscope",
     "zsh, with fpath+=~/.zfunc before compinit in ~/.zshrc"),
    ("completion fish > ~/.config/fish/completions/weightscope.fish", "fish"),
)  # fmt: skip


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "completion",
        help="print the tab-completion script for bash, zsh or fish",
        usage=usage("{bash,zsh,fish}"),
        description="Print the script that makes SHELL complete weightscope's commands, their "
        "options and file names. Generated from this version's parser, so regenerate it after "
        "an upgrade.",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback when something fails"
    )
    return parser


def main(args: argparse.Namespace) -> int:
    import shtab

    from weightscope.cli.app import build_parser

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0
