"""Every flag that a message or a doc names exists in the real parser (resnetlab/cli.py).

The package's strings (resnetlab/**/*.py: messages, help texts, docstrings) and the docs (README.md,
docs/*.md) are searched for `--flag` forms. Each is given to the subcommand it belongs to where
that can be told:
- after `resnetlab CMD` (or `python -m resnetlab CMD`) in a line of code, a string or a code span
  (`resnetlab data prepare ... --size`), and on the indented or backslash-continued lines of code
  that follow; flags of other programs on such lines (`torchrun --nproc-per-node`) are left out;
- in a code span that starts with a subcommand (`train --init-from`);
- in prose, a flag that follows subcommands named earlier in the same sentence belongs to each of
  them ("`predict`, `eval` and `bench` take ... with `--threads` threads");
- in a table of flags (its first header cell "flag"), the first cell's flags belong to the first
  subcommand of the section's code (`resnetlab train ...` above the table of train's flags);
- a message in resnetlab/commands/ belongs to each subcommand whose run function reaches it (the
  function it is in, or a helper it calls).
A flag that cannot be placed must exist in some subcommand. Code spans and lines of other
programs (`python benchmarks/...`, `pip install ...`) are not read.
"""

from __future__ import annotations

import argparse
import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from resnetlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")
MENTION = re.compile(
    r"(?<![\w.-])resnetlab[ \t]+(--[a-z][\w-]*|[a-z][\w-]*)(?:[ \t]+([a-z][\w-]*))?"
)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(])")
ANY = None  # a flag no subcommand can be told for: it must exist in one of them


def parser_flags() -> dict[str, set[str]]:
    """Option strings of every (sub)command: "" (the top level), "train", "data info", "data" (a
    group: its own and all of its subcommands')."""
    flags: dict[str, set[str]] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> set[str]:
        own = {s for a in p._actions for s in a.option_strings}
        every = set(own)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    every |= walk(sub, f"{path} {name}".strip())
        flags[path] = every if path else own
        return every

    walk(build_parser(), "")
    return flags


FLAGS = parser_flags()
TOP = {p for p in FLAGS if p and " " not in p}  # train, eval, data, experiment, ...


def command_of(words: list[str]) -> str | None:
    """The subcommand path that words after `resnetlab` name, or None."""
    if not words or words[0] not in TOP:
        return None
    if len(words) > 1 and f"{words[0]} {words[1]}" in FLAGS:
        return f"{words[0]} {words[1]}"
    return words[0]


@dataclass
class Found:
    flag: str
    commands: tuple[str, ...] | None  # None: ANY
    where: str


def _mentions(text: str) -> list[tuple[int, str]]:
    """(end offset, command) of each `resnetlab CMD [SUB]` in text."""
    out = []
    for m in MENTION.finditer(text):
        if m.group(1).startswith("--"):
            out.append((m.start(1), ""))
            continue
        cmd = command_of([w for w in m.groups() if w])
        if cmd is not None:
            end = m.end(2) if cmd.count(" ") else m.end(1)
            out.append((end, cmd))
    return out


def code_line_flags(line: str, current: str | None) -> tuple[list[tuple[str, str]], str | None]:
    """Flags of one line of code with their command, and the command a continuation inherits."""
    found = []
    marks = _mentions(line)
    for m in FLAG.finditer(line):
        cmd = current
        for end, c in marks:
            if end <= m.start():
                cmd = c
        if cmd is not None:
            found.append((m.group(0), cmd))
    if marks:
        current = marks[-1][1]
    return found, current


def prose_flags(text: str) -> list[tuple[str, tuple[str, ...] | None]]:
    """Flags of a piece of prose (or a message) with the commands they belong to."""
    out: list[tuple[str, tuple[str, ...] | None]] = []
    for sentence in SENTENCE_END.split(text):
        named: list[str] = []  # subcommands named so far in this sentence
        pos = 0
        spans = list(CODE_SPAN.finditer(sentence))
        pieces = []  # (text, is_code)
        for s in spans:
            pieces.append((sentence[pos : s.start()], False))
            pieces.append((s.group(1), True))
            pos = s.end()
        pieces.append((sentence[pos:], False))
        for piece, is_code in pieces:
            marks = _mentions(piece)
            words = piece.split()
            lead = command_of(words) if is_code and words else None
            if is_code and lead is not None and not marks:
                marks = [(0, lead)]
            other_program = is_code and words and not marks and not words[0].startswith("--")
            for m in FLAG.finditer(piece):
                before = [c for end, c in marks if end <= m.start()]
                if before:
                    out.append((m.group(0), (before[-1],)))
                elif marks or other_program:
                    continue  # a flag of the program that runs resnetlab, or of another program
                else:
                    out.append((m.group(0), tuple(dict.fromkeys(named)) or ANY))
            named.extend(c for _, c in marks)
    return out


def doc_flags(text: str, name: str) -> list[Found]:
    """Every flag of a Markdown page, placed as the module docstring says."""
    found: list[Found] = []
    in_code = False
    current: str | None = None
    prev = ""
    section: str | None = None  # the first command of the section's code
    table: str | None = None  # the command of a table of flags (its first header cell "flag")
    unit: list[str] = []
    unit_line = 0

    def flush() -> None:
        if unit:
            for flag, cmds in prose_flags(" ".join(unit)):
                found.append(Found(flag, cmds, f"{name}:{unit_line}"))
            unit.clear()

    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            flush()
            in_code, current = not in_code, None
            continue
        if in_code:
            continued = current is not None and (line[:1].isspace() or prev.rstrip().endswith("\\"))
            flags, current = code_line_flags(line, current if continued else None)
            section = section or current
            found.extend(Found(f, (c,), f"{name}:{n}") for f, c in flags)
            prev = line
            continue
        stripped = line.strip()
        starts_unit = (
            not stripped
            or stripped.startswith(("#", "|", "- ", "* "))
            or re.match(r"\d+\. ", stripped) is not None
        )
        if starts_unit:
            flush()
        if stripped.startswith("#"):
            section = None
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if cells[0].lower() == "flag":
                table = section
            for i, cell in enumerate(cells):  # each table cell on its own
                for flag, cmds in prose_flags(cell):
                    if i == 0 and cmds is ANY and table is not None:
                        cmds = (table,)
                    found.append(Found(flag, cmds, f"{name}:{n}"))
            continue
        table = None
        if stripped:
            if not unit:
                unit_line = n
            unit.append(stripped)
    flush()
    return found


def _strings(node: ast.AST) -> list[str]:
    """The text of a string constant or an f-string (its values as {})."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
        return ["".join(str(p) for p in parts)]
    return []


def _run_functions() -> dict[tuple[str, str], set[str]]:
    """(module, function name) -> the subcommands that run it."""
    runs: dict[tuple[str, str], set[str]] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        func = p._defaults.get("func")
        if func is not None:
            runs.setdefault((func.__module__, func.__name__), set()).add(path)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())

    walk(build_parser(), "")
    return runs


RUNS = _run_functions()


def module_flags(path: Path, root: Path = ROOT) -> list[Found]:
    """Every flag in the strings of one package module, placed as the module docstring says."""
    rel = path.relative_to(root)
    module = ".".join(rel.with_suffix("").parts)
    tree = ast.parse(path.read_text(), str(path))
    is_command = rel.parts[:2] == ("resnetlab", "commands")
    # which subcommands reach each function of a command module (through calls inside it)
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    calls = {
        name: {c.func.id for c in ast.walk(f) if isinstance(c, ast.Call)
               and isinstance(c.func, ast.Name) and c.func.id in functions}
        for name, f in functions.items()
    }  # fmt: skip
    reach: dict[str, set[str]] = {name: set() for name in functions}
    for name in functions:
        cmds = RUNS.get((module, name), set())
        todo, seen = [name], set()
        while todo:
            f = todo.pop()
            if f in seen:
                continue
            seen.add(f)
            reach[f] |= cmds
            todo.extend(calls[f])

    definitions = set()  # the names given to add_argument are definitions, not mentions
    for c in ast.walk(tree):
        call = isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
        if call and c.func.attr in ("add_argument", "add_parser"):
            definitions.update(id(a) for a in c.args)

    found: list[Found] = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if id(node) not in definitions:
            for text in _strings(node):
                for flag, cmds in prose_flags(text):
                    if cmds is ANY and is_command and reach.get(function or ""):
                        cmds = tuple(sorted(reach[function]))  # each subcommand it runs in
                    found.append(Found(flag, cmds, f"{rel}:{node.lineno}"))
            if isinstance(node, ast.JoinedStr):
                return
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    return found


def unknown(found: list[Found]) -> list[str]:
    """The found flags that a subcommand they belong to lacks, as 'where: --flag (why)'."""
    everywhere = set().union(*FLAGS.values()) | {"--help"}
    bad = []
    for f in found:
        if f.flag == "--help":
            continue
        if f.commands is ANY:
            if f.flag not in everywhere:
                bad.append(f"{f.where}: {f.flag} (no subcommand has it)")
        else:
            for c in f.commands:
                if f.flag not in FLAGS[c]:
                    bad.append(f"{f.where}: {f.flag} ({f'resnetlab {c}'.strip()} has no such flag)")
    return bad


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_flag_the_docs_name_exists():
    found = [f for p in doc_pages() for f in doc_flags(p.read_text(), p.relative_to(ROOT).name)]
    assert len(found) > 50  # the docs do name flags: the search finds them
    assert unknown(found) == []


def test_every_flag_the_package_messages_name_exists():
    paths = sorted((ROOT / "resnetlab").rglob("*.py"))
    found = [f for p in paths for f in module_flags(p)]
    assert len(found) > 20
    assert unknown(found) == []


# the checker itself: it finds what it should, where it should


@pytest.mark.parametrize(
    "doc, expected",
    [
        ("```\nresnetlab predict w.safetensors a.png --no-such-flag\n```", "resnetlab predict"),
        ("```\nresnetlab bench resnet50 [--json]\n                [--no-such-flag]\n```", "bench"),
        ("```\nresnetlab data prepare in out --size 8 --no-such-flag\n```", "data prepare"),
        ("Run `resnetlab train --data x --no-such-flag` now.", "resnetlab train"),
        ("`predict` and `eval` read int8 files (with `--fp32` too).", "resnetlab eval has no"),
        ("Pass `--no-such-flag` to go faster.", "no subcommand"),
        ("| `--no-such-flag` | a row of a table |", "no subcommand"),
        ("```\nresnetlab eval w\n```\n| flag | meaning |\n|---|---|\n| `--fp32` | f |", "eval"),
    ],
)
def test_a_flag_that_does_not_exist_is_reported(doc, expected):
    bad = unknown(doc_flags(doc, "x.md"))
    assert len(bad) == 1 and expected in bad[0], bad


@pytest.mark.parametrize(
    "doc",
    [
        "```\nresnetlab predict w.safetensors a.png --threads 1\n```",  # predict has --threads
        "`predict`, `eval` and `bench` take the file (with `--threads` threads).",
        "```\ntorchrun --nproc-per-node 2 -m resnetlab train --data x\n```",  # torchrun's flag
        "Measured with `python benchmarks/bench_train.py --rounds 3`.",  # another program's
        "```\nresnetlab train --data x --skip-bad --size 32 --mode RGB --log tensorboard\n```",
    ],
)
def test_flags_that_exist_or_belong_to_other_programs_pass(doc):
    assert unknown(doc_flags(doc, "x.md")) == []


def test_a_flag_named_by_a_command_module_is_checked_against_its_subcommand(tmp_path):
    src = ROOT / "resnetlab" / "commands" / "deploy.py"
    tree = ast.parse(src.read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"run_export", "run_quantize"} <= names
    fake = tmp_path / "resnetlab" / "commands" / "deploy.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        'def run_export(args):\n    raise ValueError("--topk: export has none")\n'
        'def run_quantize(args):\n    raise ValueError(f"--images {args.images}: fine")\n'
    )
    bad = unknown(module_flags(fake, tmp_path))
    assert bad == ["resnetlab/commands/deploy.py:2: --topk (resnetlab export has no such flag)"]
