"""The documentation is tested like code.

- Every ``console``/``bash``/``sh``/``shell``/``python`` block of ``README.md`` and ``docs/`` is
  marked: ``<!-- test: run -->`` (optionally ``exit=N``) blocks are run, in page order, in a fresh
  folder holding copies of the bundled example; ``weightscope`` commands run in-process through
  ``weightscope.cli.main``, and where a ``console`` block shows output, the output must match
  (``...`` matches any text in a line, a line of only ``...`` any lines). ``<!-- test: skip
  REASON -->`` blocks are not run. See docs/development.md.
- ``inspect --json`` of the bundled example (Keras, PyTorch and ONNX files; plain, ``--health``,
  ``--no-stats``, ``--layer``) validates against ``docs/schemas/inspect.schema.json``, from which
  the docs' key table is generated.
- The generated sections (docs/hooks.py) cover every layout entry, limit and command.
- The README stays short, keeps exactly the two set-up commands, and CI runs its test command.
- The site builds with ``mkdocs build --strict`` (skipped where mkdocs is not installed; .ci/run
  builds it too).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest

import weightscope
from weightscope.cli import main
from weightscope.examples import EXAMPLE_FILES, example_path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
RUNNABLE = {"console", "bash", "sh", "shell", "python"}
OTHER_MARKERS = ("scan-queries", "scan-queries-sql")  # run by tests/test_readme_scan.py
MARKER = re.compile(r"<!-- test: (run|skip)\b\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)")
README_MAX_LINES = 200
TEST_COMMAND = (
    'python -m pip install -e ".[test]" && python -m pip install --no-deps "tf-keras==2.21.*" '
    "&& python -m pytest"
)


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None  # the comment on the line before the fence

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def action(self) -> str | None:
        found = MARKER.fullmatch(self.marker or "")
        return found.group(1) if found else None

    @property
    def exit_status(self) -> int:
        found = MARKER.fullmatch(self.marker or "")
        options = dict(o.split("=", 1) for o in found.group(2).split() if "=" in o) if found else {}
        return int(options.get("exit", 0))


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page (not indented ones: no page has runnable code in a list)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        assert end < len(lines), f"{page}:{index + 1}: unclosed code block"
        before = lines[index - 1].strip() if index else ""
        marker = before if before.startswith("<!--") else None
        code = "\n".join(lines[index + 1 : end]) + "\n"
        found.append(Block(page, index + 1, opening.group(1), code, marker))
        index = end + 1
    return found


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -- every block is marked ------------------------------------------------------------------------


def test_docs_exist() -> None:
    assert (ROOT / "mkdocs.yml").is_file()
    assert len(PAGES) > 10


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_code_block_is_marked(page: Path) -> None:
    unmarked = [
        block.where
        for block in blocks(page)
        if block.language in RUNNABLE
        and block.action is None
        and not any(f"<!-- {m}:" in (block.marker or "") for m in OTHER_MARKERS)
    ]
    assert not unmarked, (
        f"code blocks without '<!-- test: run -->' or '<!-- test: skip REASON -->': {unmarked}"
    )


def test_skipped_blocks_say_why() -> None:
    reasonless = [
        block.where
        for page in PAGES
        for block in blocks(page)
        if block.action == "skip" and not MARKER.fullmatch(block.marker or "").group(2)  # type: ignore[union-attr]
    ]
    assert not reasonless


# -- running the blocks -------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What the docs' examples may rely on: the bundled example as model.h5/.pt/.onnx, the three
    in models/, and notes.txt, which is not a model."""
    (tmp_path / "models").mkdir()
    for framework, name in EXAMPLE_FILES.items():
        suffix = Path(name).suffix
        shutil.copyfile(example_path(framework), tmp_path / f"model{suffix}")
        shutil.copyfile(example_path(framework), tmp_path / "models" / name)
    (tmp_path / "notes.txt").write_text("not a model\n")
    monkeypatch.chdir(tmp_path)
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):  # output as in a pipe, 160 wide
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run_weightscope(argv: list[str]) -> tuple[int, str, str]:
    """``weightscope ARGV`` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse errors
            status = exc.code if isinstance(exc.code, int) else 1
    return status, out.getvalue(), err.getvalue()


def _command(line: str, where: str) -> tuple[list[str], str | None]:
    """The weightscope arguments of a documented command line, and a file its stdout goes to."""
    words = shlex.split(line, comments=True)
    target = None
    if len(words) >= 2 and words[-2] == ">":
        words, target = words[:-2], words[-1]
    assert not {"|", "&&", ";", ">", "<"} & set(words), f"{where}: not runnable in-process: {line}"
    if words[:3] == ["python", "-m", "weightscope"]:
        words = words[3:]
    elif words[:1] == ["weightscope"]:
        words = words[1:]
    else:
        raise AssertionError(f"{where}: only weightscope commands run here: {line}")
    return words, target


def expected_pattern(lines: list[str]) -> re.Pattern[str]:
    pieces = []
    for line in lines:
        if line.strip() == "...":
            pieces.append(r"(?:[^\n]*\n)*")
        else:
            pieces.append(".*".join(re.escape(part) for part in line.rstrip().split("...")) + "\n")
    return re.compile("".join(pieces))


def output_matches(expected: list[str], actual: str) -> bool:
    text = "".join(line.rstrip() + "\n" for line in actual.rstrip("\n").splitlines())
    if not expected:
        return True
    return expected_pattern(expected).fullmatch(text) is not None


def _run_commands(block: Block) -> None:
    """A console block: ``$ `` lines and the output each shows; a shell block: command lines."""
    commands: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if block.language == "console":
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                assert commands, f"{block.where}: output before the first '$ ' line"
                commands[-1][1].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            commands.append((line, []))
    assert commands, f"{block.where}: nothing to run"
    for line, expected in commands:
        argv, target = _command(line, block.where)
        status, out, err = run_weightscope(argv)
        assert status == block.exit_status, (
            f"{block.where}: `{line}` exited {status}, not {block.exit_status}\n{out}{err}"
        )
        if target is not None:
            Path(target).write_text(out, encoding="utf-8")
            out = ""
        if block.language == "console":
            assert output_matches(expected, out + err), (
                f"{block.where}: `{line}` printed\n{out}{err}\nnot what the docs show:\n"
                + "\n".join(expected)
            )


def _run_python(block: Block) -> None:
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    exec(compile(block.code, block.where, "exec"), namespace)


RUN_PAGES = [page for page in PAGES if any(b.action == "run" for b in blocks(page))]


@pytest.mark.parametrize("page", RUN_PAGES, ids=_page_id)
def test_examples_run_as_documented(page: Path, workdir: Path) -> None:
    for block in blocks(page):
        if block.action != "run":
            continue
        if block.language == "python":
            _run_python(block)
        elif block.language in RUNNABLE:
            _run_commands(block)
        else:
            raise AssertionError(f"{block.where}: cannot run a {block.language!r} block")


def test_output_matching() -> None:
    """The wildcard rules the examples rely on, both ways."""
    assert output_matches(["a ... c", "..."], "a b c\nx\ny\n")
    assert output_matches(["a", "...", "d"], "a\nb\nc\nd\n")
    assert output_matches(["a", "...", "b"], "a\nb\n")
    assert output_matches(["x  "], "x\n")
    assert not output_matches(["a", "b"], "a\nb\nc\n")
    assert not output_matches(["a ... c"], "a b\nc\n")
    assert not output_matches(["a.c"], "abc\n")


# -- inspect --json against its schema ----------------------------------------------------------

SCHEMA_PATH = DOCS / "schemas" / "inspect.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(data)
    return data


@pytest.mark.parametrize("framework", list(EXAMPLE_FILES))
@pytest.mark.parametrize("options", [[], ["--health"], ["--no-stats"], ["--layer", "first"]])
def test_inspect_json_of_the_example_follows_the_schema(
    schema: dict[str, Any], framework: str, options: list[str]
) -> None:
    path = str(example_path(framework))
    if options[:1] == ["--layer"]:
        with weightscope.load(path) as model:
            options = ["--layer", model.layers[0].name]
    status, out, err = run_weightscope(["inspect", path, "--json", *options])
    assert status == 0, err
    data = json.loads(out)
    jsonschema.Draft202012Validator(schema).validate(data)
    assert data["format"] and data["layers"]
    if "--no-stats" in options:
        assert all("stats" not in t for layer in data["layers"] for t in layer["tensors"])
    else:
        assert all("stats" in t for layer in data["layers"] for t in layer["tensors"])
    assert all(("health" in layer) == ("--health" in options) for layer in data["layers"])


def test_schema_is_closed_and_describes_every_key(schema: dict[str, Any]) -> None:
    """Every object is closed (a new key fails validation) and every key has a description, so
    the generated table explains all of them."""
    objects = [schema, *schema["$defs"].values()]
    for node in objects:
        if "properties" in node:
            assert node.get("additionalProperties") is False, node.get("description")
            for key, child in node["properties"].items():
                ref = schema["$defs"].get(child.get("$ref", "").removeprefix("#/$defs/"), {})
                assert child.get("description") or ref.get("description"), key


def test_schema_lists_every_kind_and_flag(schema: dict[str, Any]) -> None:
    from weightscope.analysis.health import FLAGS

    assert schema["$defs"]["layer"]["properties"]["kind"]["enum"] == list(weightscope.LAYER_KINDS)
    flags = schema["$defs"]["health"]["properties"]["flags"]["items"]["enum"]
    assert flags == list(FLAGS)


def test_schema_rejects_an_undocumented_key(schema: dict[str, Any]) -> None:
    status, out, _ = run_weightscope(["inspect", "--example", "--json"])
    assert status == 0
    data = json.loads(out)
    data["layers"][0]["tensors"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


# -- the generated sections ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("weightscope_docs_hooks", DOCS / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_section_exists_and_is_used(hooks: ModuleType) -> None:
    used = {name for page in DOCS.rglob("*.md") for name in hooks.MARKER.findall(page.read_text())}
    assert used == set(hooks.GENERATORS)


def test_generated_layouts_list_every_entry(hooks: ModuleType) -> None:
    from weightscope.layouts import USES

    text = hooks.layouts_markdown()
    for use in USES:
        assert f"### `{use.kind}`" in text
        assert use.owner in text and f"`{use.layout}`" in text
    assert f"{len(USES)} entries" in text


def test_generated_limits_list_every_limit(hooks: ModuleType) -> None:
    text = hooks.limits_markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(weightscope.Limits.names())


def test_generated_help_covers_every_command(hooks: ModuleType) -> None:
    from weightscope.cli.options import COMMANDS

    helps = hooks.command_help()
    assert set(helps) == {"weightscope", "inspect", "export", *COMMANDS}
    assert all(text.startswith("usage: ") for text in helps.values())


def test_generated_json_fields_cover_the_real_output(hooks: ModuleType) -> None:
    """Every key path the bundled example prints (with --health) is a row of the table."""
    status, out, _ = run_weightscope(["inspect", "--example", "--json", "--health"])
    assert status == 0
    documented = {path for path, *_ in hooks.schema_fields()}

    def paths(value: Any, prefix: str) -> set[str]:
        found: set[str] = set()
        if isinstance(value, dict):
            for key, child in value.items():
                found.add(prefix + key)
                if key != "config":  # the framework's own, documented as one object
                    found |= paths(child, f"{prefix}{key}.")
        elif isinstance(value, list):
            for item in value:
                found |= paths(item, prefix[:-1] + "[].")
        return found

    printed = paths(json.loads(out), "")
    assert printed <= documented, printed - documented


REPO_PATH = re.compile(r"`((?:weightscope|tests|scripts|benchmarks|notebooks|docs)/[\w./-]*)`")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_repository_paths_named_in_the_docs_exist(page: Path) -> None:
    """A file or folder the docs name in code (`weightscope/layouts.py`) is where they say."""
    named = REPO_PATH.findall(page.read_text(encoding="utf-8"))
    missing = sorted({path for path in named if not (ROOT / path).exists()})
    assert not missing, f"{_page_id(page)} names paths that do not exist: {missing}"


def test_architecture_page_names_every_module() -> None:
    """The package tree on the architecture page keeps up with the package (command modules are
    covered by ``commands/ one per command``)."""
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "weightscope"
    missing = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).parts
        if path.name == "__init__.py" and len(parts) > 1:
            name = f"{parts[-2]}/"
        elif path.name == "__init__.py" or parts[:2] == ("cli", "commands"):
            continue
        else:  # a top-level module by its file name, as the tree shows it
            name = path.name if len(parts) == 1 else path.stem
        if not re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", page):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"docs/architecture.md does not mention {missing}"


# -- the README ---------------------------------------------------------------------------------


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second() -> None:
    text = README.read_text(encoding="utf-8")
    setup = text.split("## Set-up\n", 1)[1].split("\n## ", 1)[0]
    commands = [b.code.strip() for b in blocks(README) if b.code.strip() in setup]
    assert commands == ["python -m pip install -e . && weightscope inspect --example", TEST_COMMAND]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in ci.splitlines()


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing


# -- the site builds ----------------------------------------------------------------------------


def test_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "reference" / "layouts" / "index.html").read_text(encoding="utf-8")
    assert "generated:" not in html and "DepthwiseConv2D" in html
    assert (tmp_path / "schemas" / "inspect.schema.json").is_file()
    assert (tmp_path / "images" / "example_dwconv2.png").is_file()
    assert not (tmp_path / "hooks.py").exists()
