"""bot/ is platform-neutral: it imports no chat library and no adapter."""

from __future__ import annotations

import ast
from pathlib import Path

BOT = Path(__file__).resolve().parent.parent / "bot"
FORBIDDEN = ("discord", "telegram", "adapters")


def test_core_imports_no_platform_code():
    offenders = []
    for path in BOT.glob("*.py"):
        if path.name == "__main__.py":  # the documented entry point that wires adapters
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
