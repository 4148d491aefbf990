"""The layering the code relies on, checked on the source itself.

Arrows point down only: adapters use the engine's facade and the core's types,
never the store or the credit policy; only the store speaks SQL; bot/ knows no chat
platform; every sentence a user reads is built in bot/messages.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOT, ADAPTERS = ROOT / "bot", ROOT / "adapters"
CHAT_LIBRARIES = ("discord", "telegram")
# What an adapter may import from the core. The composition root also starts the
# shipped development servers (the demo's simulator and sample photo).
# bot.videofit: the shared chat courier re-encodes a video to fit a chat's upload limit.
# bot.webhooks: the Telegram update listener faces the internet as WaveSpeed's does, and
# shares its bounds (ConnectionGate) rather than copying them.
# bot.payments: the payments' core types (Purchase, the charge keys, the invoice payload), as bot.jobs is the jobs'.
ADAPTER_MAY_IMPORT = {"bot.engine", "bot.jobs", "bot.messages", "bot.catalog", "bot.config", "bot.videofit",
                      "bot.webhooks", "bot.payments"}
# `kling-bot db copy` works on two stores and no engine: the composition root runs it;
# `kling-bot doctor` checks the settings, the store and the remote services, before any engine.
# The composition root also wires the simulator and the operations listener.
COMPOSITION_ROOT_MAY_ALSO = {"bot.devtools.simulator", "bot.devtools.clips", "bot.store.copy", "bot.ops_http",
                             "bot.doctor"}
SQL = re.compile(r"^\s*(select\s.*\sfrom\s|insert\s+into\s|update\s+\w+\s+set\s|delete\s+from\s"
                 r"|create\s+(table|index)\s|pragma\s|begin\s+immediate)", re.IGNORECASE | re.DOTALL)
SQL_CALLS = {"execute", "executemany", "executescript", "rows_where", "count_where", "conn"}
LONGEST_CLASS = 250
# Files whose words are not for chat users: operator diagnostics of the config schema,
# API error details that are logged, answers to WaveSpeed's webhook calls, argparse help
# (and, below, SQL and the dev servers).
NOT_USER_FACING = {"bot/messages.py", "bot/config.py", "bot/wavespeed.py", "bot/webhooks.py",
                   "adapters/cli.py"}


def sources(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # "from bot import messages" imports the module bot.messages
            names += [f"{node.module}.{a.name}" for a in node.names] if node.module == "bot" \
                else [node.module]
    return names


def test_core_imports_no_platform_code():
    offenders = [f"{rel(p)}: {n}" for p in sources(BOT) for n in imported(p)
                 if n.split(".")[0] in (*CHAT_LIBRARIES, "adapters")]
    assert offenders == []


def test_adapters_use_only_the_facade_and_the_core_types():
    offenders = []
    for path in sources(ADAPTERS):
        allowed = ADAPTER_MAY_IMPORT | (COMPOSITION_ROOT_MAY_ALSO if path.name == "app.py" else set())
        offenders += [f"{rel(path)}: {name}" for name in imported(path)
                      if name.split(".")[0] == "bot" and name not in allowed]
    assert offenders == []


def test_only_the_store_speaks_sql():
    offenders = []
    for path in sources(BOT, ADAPTERS):
        if rel(path).startswith("bot/store/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
                offenders.append(f"{rel(path)}:{node.lineno}: {node.value[:40]!r}")
            if isinstance(node, ast.Attribute) and node.attr in SQL_CALLS:
                offenders.append(f"{rel(path)}:{node.lineno}: .{node.attr}")
    assert offenders == []


def test_no_core_class_is_a_crowded_room():
    long = [f"{rel(p)}: {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for p in sources(BOT) for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > LONGEST_CLASS]
    assert long == []


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [n for n in ast.walk(tree)
             if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def _is_log_call(node: ast.AST) -> bool:
    """log.info(...), logging.warning(...): words for the log."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("log", "logging"))


def _is_internal_error(node: ast.AST) -> bool:
    """raise RuntimeError(...) / OSError(...) / ValueError(...): for the log, or for the caller
    to turn into a message, never shown to users as they are (ValidationError is what is)."""
    return (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name)
            and node.exc.func.id in ("RuntimeError", "OSError", "ValueError"))


def _not_for_users(tree: ast.AST) -> set[int]:
    """Every node inside a log call or an internal error."""
    return {id(inner) for node in ast.walk(tree) if _is_log_call(node) or _is_internal_error(node)
            for inner in ast.walk(node)}


def test_every_user_facing_sentence_is_built_in_messages():
    """A literal of three or more words that reads like a sentence belongs in messages.py."""
    sentence = re.compile(r"[A-Za-z]+[,;:'’]?\s+[A-Za-z]+[,;:'’]?\s+[A-Za-z]+")
    offenders = []
    for path in sources(BOT, ADAPTERS):
        if rel(path) in NOT_USER_FACING or rel(path).startswith("bot/store/") or "devtools" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree) | _not_for_users(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in skip and sentence.search(node.value)):
                offenders.append(f"{rel(path)}:{node.lineno}: {node.value[:50]!r}")
    assert offenders == []


# --- inside a platform adapter: one direction ---------------------------------------------

PLATFORM_PACKAGES = ("discord", "telegram")
# Modules the rest of their package builds on: each imports no other module of it.
LEAVES = {"adapters.discord.kit", "adapters.discord.items", "adapters.discord.forms"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def package_imports(package: Path) -> dict[str, set[str]]:
    """Each module of ``package`` -> the modules of the same package it imports (at the top,
    inside a function or under TYPE_CHECKING alike: each is a dependency). ``from pkg import
    mod`` imports the module ``pkg.mod``."""
    modules = {module_name(p) for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                            else node.module for alias in node.names}
        graph[module_name(path)] = {t for t in targets if t in modules} - {module_name(path)}
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of imports (``[a, b, a]``: a imports b, b imports a), or [] when there is none."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return []
        for target in sorted(graph.get(module, ())):
            if cycle := visit(target, [*path, module]):
                return cycle
        done.add(module)
        return []

    return next((cycle for module in sorted(graph) if (cycle := visit(module, []))), [])


def test_import_cycles_are_found():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize("platform", PLATFORM_PACKAGES)
def test_a_platform_adapter_imports_in_one_direction(platform):
    """The adapter imports its commands and views; they never import it, nor each other in a ring."""
    assert import_cycle(package_imports(ADAPTERS / platform)) == []


def test_discord_views_reach_the_adapter_only_through_the_interaction():
    graph = package_imports(ADAPTERS / "discord")
    importing_the_adapter = sorted(m for m, targets in graph.items() if "adapters.discord.bot" in targets)
    assert importing_the_adapter == ["adapters.discord"]  # the package's __init__, re-exporting it
    assert {leaf: graph[leaf] for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}
