"""Content fingerprints of a workflow script and every library module it imports.

Snakemake re-runs a job when its params change; passing this fingerprint as a param makes an
edit to the script or to any ``pifi`` module it reaches (directly or through other modules)
re-run the job, while touching a file re-runs nothing. The imports are read with ``ast``, so the
list of modules cannot drift from the code.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "pifi"


def _imported_modules(source: str) -> set[str]:
    """Dotted names, below ``pifi``, of the modules a piece of code may import (``pifi.a.b`` -> ``a.b``;
    ``from pifi.a import b`` -> ``a`` and ``a.b``, which is kept only where it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == PACKAGE:
                below = ".".join(parts[1:])
                if below:
                    found.add(below)
                found.update(f"{below}.{alias.name}".lstrip(".") for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(".".join(parts[1:]))
    return found


def _module_file(package_dir: Path, name: str) -> Path | None:
    base = package_dir.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def library_closure(script: str | Path, package_dir: str | Path) -> list[Path]:
    """The library files ``script`` depends on, following imports between modules.

    A submodule brings its package's ``__init__``; a subpackage's ``__init__`` brings every module of its
    folder (``pifi.selectors`` imports each selector module it finds).
    """
    package_dir = Path(package_dir)
    seen: dict[str, Path] = {}
    pending = _imported_modules(Path(script).read_text())
    while pending:
        name = pending.pop()
        path = _module_file(package_dir, name)
        if name in seen or path is None:
            continue
        seen[name] = path
        pending |= _imported_modules(path.read_text())
        if "." in name:
            pending.add(name.rsplit(".", 1)[0])
        if path.name == "__init__.py" and path.parent != package_dir:
            pending |= {f"{name}.{module.stem}" for module in path.parent.glob("*.py") if module.stem != "__init__"}
    return sorted(set(seen.values()))


def code_fingerprint(script: str | Path, package_dir: str | Path) -> str:
    """A short hash of the script's content and of every library module it reaches."""
    digest = hashlib.sha256()
    digest.update(Path(script).name.encode())
    digest.update(Path(script).read_bytes())
    for path in library_closure(script, package_dir):
        digest.update(path.relative_to(package_dir).as_posix().encode())  # a top-level module: its file name
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
