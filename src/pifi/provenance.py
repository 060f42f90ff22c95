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
    """Names of the ``pifi`` modules a piece of code imports (``pifi.x`` -> ``x``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == PACKAGE:
                if len(parts) > 1:
                    found.add(parts[1])
                else:  # from pifi import x
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
    return found


def library_closure(script: str | Path, package_dir: str | Path) -> list[Path]:
    """The library files ``script`` depends on, following imports between modules."""
    package_dir = Path(package_dir)
    seen: dict[str, Path] = {}
    pending = _imported_modules(Path(script).read_text())
    while pending:
        name = pending.pop()
        path = package_dir / f"{name}.py"
        if name in seen or not path.exists():
            continue
        seen[name] = path
        pending |= _imported_modules(path.read_text())
    return [seen[name] for name in sorted(seen)]


def code_fingerprint(script: str | Path, package_dir: str | Path) -> str:
    """A short hash of the script's content and of every library module it reaches."""
    digest = hashlib.sha256()
    for path in [Path(script), *library_closure(script, package_dir)]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
