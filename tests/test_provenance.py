"""Code fingerprints follow a script's imports through the library, and only them."""

from __future__ import annotations

from pathlib import Path

from pifi.provenance import code_fingerprint, library_closure
from tiny_project import REPO


def write_package(root: Path) -> tuple[Path, Path]:
    package = root / "pifi"
    package.mkdir()
    (package / "a.py").write_text("from pifi.b import helper\n")
    (package / "b.py").write_text("def helper():\n    from pifi import c\n")
    (package / "c.py").write_text("X = 1\n")
    (package / "unrelated.py").write_text("Y = 2\n")
    script = root / "script.py"
    script.write_text("import json\nfrom pifi.a import helper\n")
    return script, package


def test_closure_follows_imports_including_lazy_ones(tmp_path):
    script, package = write_package(tmp_path)
    assert [p.name for p in library_closure(script, package)] == ["a.py", "b.py", "c.py"]


def test_fingerprint_changes_with_reached_code_only(tmp_path):
    script, package = write_package(tmp_path)
    before = code_fingerprint(script, package)
    (package / "unrelated.py").write_text("Y = 3\n")
    (package / "c.py").touch()
    assert code_fingerprint(script, package) == before
    (package / "c.py").write_text("X = 2\n")
    assert code_fingerprint(script, package) != before


def test_real_scripts_reach_the_modules_they_use():
    scripts, library = REPO / "workflow/scripts", REPO / "src/pifi"
    reached = {s.stem: {p.stem for p in library_closure(s, library)} for s in scripts.glob("*.py")}
    assert {"training", "model", "plugged_layer", "model_sources", "gpu"} <= reached["train"]
    assert {"selection", "hidden"} <= reached["layer_effects"]
    assert "training" not in reached["summarize"] and "summary" in reached["summarize"]
