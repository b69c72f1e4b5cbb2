"""The command line's help teaches: every command has examples that parse, a usage line of one
shape naming what it requires, every option described; the reader limits are documented once
(``weightscope limits``); ``--version``; shell completion scripts; and ``--help`` stays light."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli

import weightscope
from weightscope.cli import build_parser
from weightscope.cli.options import COMMANDS
from weightscope.limits import DEFAULT, Limits, format_value

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_LINE = re.compile(r"^  weightscope (\S.*)$", re.MULTILINE)
USAGE = re.compile(r"^usage: weightscope (?P<name>[a-z]+)(?P<operands>( \S+)*?) \[options\]$")


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    found = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(found.choices)


def example_commands(epilog: str) -> list[str]:
    """The command lines an epilog shows (``  weightscope ARGS   what it does``), up to a shell
    redirection."""
    lines = [re.split(r"\s{2,}", line)[0] for line in EXAMPLE_LINE.findall(epilog)]
    return [re.split(r" [>|<] ", line)[0] for line in lines]


def help_text(parser: argparse.ArgumentParser, columns: int = 80) -> str:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        return parser.format_help()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def test_every_command_is_registered_and_in_the_parser():
    assert list(commands()) == list(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_one_to_three_examples_that_parse(name):
    parser = commands()[name]
    epilog = parser.epilog or ""
    assert epilog.startswith("examples:\n"), name
    shown = example_commands(epilog)
    assert 1 <= len(shown) <= 3, shown
    assert any(line.split()[0] == name for line in shown), shown
    for line in shown:
        build_parser().parse_args(shlex.split(line))  # a usage error would exit
    assert "examples:" in help_text(parser)


def test_the_overview_examples_parse():
    parser = build_parser()
    shown = example_commands(parser.epilog or "")
    assert len(shown) >= len(COMMANDS)
    assert {line.split()[0] for line in shown} == set(COMMANDS)
    for line in shown:
        build_parser().parse_args(shlex.split(line))


@pytest.mark.parametrize("name", COMMANDS)
def test_usage_lines_have_one_shape_and_name_what_is_required(name):
    parser = commands()[name]
    line = parser.format_usage().strip()
    match = USAGE.match(line)
    assert match and match["name"] == name, line
    operands = match["operands"]
    for action in parser._actions:
        if action.option_strings and action.required:
            assert f"{action.option_strings[0]} {action.metavar}" in operands, (name, action)
    takes_file = any(a.dest == "file" for a in parser._actions) or name == "explain"
    assert operands.startswith(" (FILE | --example)") == takes_file, line


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_and_operand_is_described(name):
    for action in commands()[name]._actions:
        assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_inspect_without_a_file_prints_its_own_usage_and_one_error_line():
    result = run_cli("inspect")
    assert result.returncode == 2
    assert result.stderr == (
        "usage: weightscope inspect (FILE | --example) [options]\n"
        "weightscope inspect: error: FILE is required (or --example for the bundled model)\n"
    )
    both = run_cli("export", weightscope.example_path(), "--example", "-o", "w.npz")
    assert both.returncode == 2
    assert both.stderr.splitlines() == [
        "usage: weightscope export (FILE | --example) -o OUT.npz [options]",
        "weightscope export: error: give either FILE or --example, not both",
    ]


def test_plot_layer_is_required_by_the_parser(tmp_path):
    result = run_cli("plot", "--example", "-o", tmp_path / "k.png")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "weightscope plot: error: the following arguments are required: --layer"
    )
    assert not (tmp_path / "k.png").exists()
    assert "--layer NAME -o OUT.png|svg|pdf [options]" in commands()["plot"].format_usage()


def test_report_output_is_described():
    text = " ".join(help_text(commands()["report"]).split())
    assert "-o OUT.html, --output OUT.html the HTML page to write" in text


# ---------------------------------------------------------------------------------------------
# limits: documented once


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "limits"])
def test_limits_are_referred_to_in_one_line_not_listed(name):
    text = help_text(commands()[name])
    for limit in Limits.names():
        assert limit not in text, (name, limit)
    lines = [line for line in text.splitlines() if "--limit" in line]
    if "--limit NAME=VALUE" not in text:
        return  # reads no model file
    entry = next(i for i, line in enumerate(lines) if line.lstrip().startswith("--limit"))
    assert "weightscope limits" in lines[entry], lines[entry]
    index = text.splitlines().index(lines[entry])
    following = text.splitlines()[index + 1]
    assert following.lstrip().startswith("--"), following  # the entry is one line


def test_limits_command_lists_every_limit_with_its_default():
    result = run_cli("limits")
    assert result.returncode == 0, result.stderr
    for name in Limits.names():
        default = format_value(name, getattr(DEFAULT, name))
        assert f"\n{name} = {default} ({Limits.unit(name)})\n    " in result.stdout, name
    assert "--limit NAME=VALUE" in result.stdout and "``" not in result.stdout
    one = run_cli("limits", "max-json-bytes")
    assert one.stdout.startswith("max_json_bytes = 64M (bytes)\n    Keras: the largest")
    assert "max_zip_ratio" not in one.stdout
    unknown = run_cli("limits", "max_nothing")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("weightscope: unknown limit 'max_nothing' (limits: ")
    assert unknown.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# version, completion, a light --help


def test_version_prints_the_package_version():
    found = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert found is not None
    declared = found.group(1)
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"weightscope {declared}\n"
    assert declared == weightscope.__version__


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    found = {}
    for shell in ("bash", "zsh", "fish"):
        result = run_cli("completion", shell)
        assert result.returncode == 0, result.stderr
        found[shell] = result.stdout
    return found


def test_completion_scripts_name_every_command(scripts):
    for shell, script in scripts.items():
        for name in COMMANDS:
            assert name in script, (shell, name)
        assert "--limit" in script and "--example" in script, shell
    assert "_shtab_weightscope_inspect_pos_0_COMPGEN=_shtab_compgen_files" in scripts["bash"]
    assert scripts["zsh"].startswith("#compdef weightscope")
    assert "complete -c weightscope" in scripts["fish"]
    unknown = run_cli("completion", "tcsh")
    assert unknown.returncode == 2 and "invalid choice: 'tcsh'" in unknown.stderr


def test_bash_accepts_the_completion_script(scripts, tmp_path):
    script = tmp_path / "weightscope.bash"
    script.write_text(scripts["bash"])
    result = subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(script))} && complete -p weightscope"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(" weightscope"), result.stdout
    assert "-F _shtab_weightscope" in result.stdout


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_parse_their_scripts(scripts, tmp_path, shell):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    script = tmp_path / f"weightscope.{shell}"
    script.write_text(scripts[shell])
    result = subprocess.run(
        [shell, "-n", str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


HEAVY = ("shtab", "matplotlib", "h5py", "onnx", "torch", "tensorflow", "keras", "scipy",
         "pandas", "pyarrow", "PIL", "ml_dtypes", "onnxruntime", "fsspec", "s3fs", "aiohttp",
         "huggingface_hub")  # fmt: skip

LIGHT_CHECK = """
import sys
from weightscope.cli.app import main
for argv in [["--help"], *[[name, "--help"] for name in sys.argv[1:]]]:
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
print("LOADED:", sorted({m.split(".")[0] for m in sys.modules} & set(%r)))
"""


@pytest.mark.slow
def test_help_imports_nothing_heavy():
    """--help of weightscope and of every command, in a fresh interpreter: the completion
    command's shtab, the figures' matplotlib and the readers' h5py and onnx stay unimported."""
    result = subprocess.run(
        [sys.executable, "-c", LIGHT_CHECK % (HEAVY,), *COMMANDS],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "LOADED: []" in result.stdout, result.stdout
