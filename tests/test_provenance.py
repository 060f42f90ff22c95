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
    reached = {s.stem: {p.relative_to(library).as_posix() for p in library_closure(s, library)}
               for s in scripts.glob("*.py")}
    assert {"training.py", "model.py", "plugged_layer.py", "model_sources.py", "gpu.py"} <= reached["train"]
    assert {"selectors/pc_patching.py", "hidden.py"} <= reached["layer_effects"]
    assert "training.py" not in reached["summarize"] and "summary.py" in reached["summarize"]
    # The registry imports every selector module it finds: a script that asks it reaches them all; no
    # training job reaches any selector.
    selector_modules = {f"selectors/{p.name}" for p in (library / "selectors").glob("*.py")}
    assert selector_modules <= reached["layer_scores"] and selector_modules <= reached["select_layer"]
    assert not any(path.startswith("selectors/") for path in reached["train"] | reached["evaluate"])


def test_a_subpackage_brings_its_init_and_its_init_every_module_of_its_folder(tmp_path):
    package = tmp_path / "pifi"
    (package / "sub").mkdir(parents=True)
    (package / "sub/__init__.py").write_text("import importlib\n")  # finds its modules at run time
    (package / "sub/one.py").write_text("from pifi.helper import x\n")
    (package / "sub/two.py").write_text("Y = 2\n")
    (package / "helper.py").write_text("x = 1\n")
    (package / "other.py").write_text("Z = 3\n")
    script = tmp_path / "script.py"
    script.write_text("from pifi.sub.two import Y\n")
    closure = [p.relative_to(package).as_posix() for p in library_closure(script, package)]
    assert closure == ["helper.py", "sub/__init__.py", "sub/one.py", "sub/two.py"]
    before = code_fingerprint(script, package)
    (package / "sub/one.py").write_text("from pifi.helper import x  # edited\n")
    assert code_fingerprint(script, package) != before
