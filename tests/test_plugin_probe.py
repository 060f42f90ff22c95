"""plugin_probe against constructed layers with a known answer and against independent training runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model

from pifi.plugged_layer import build_plugged_layer
from pifi.plugin_probe import _linear_weight, plugged_layer_accuracy
from pifi.plugin_probe import score_plugged_layers as train_and_score
from pifi.selectors.plugin_probe import PluginProbeParams
from pifi.selectors import best_layer
from pifi.selectors import score_plugged_layers

HIDDEN, D_SLM, N = 32, 16, 96
IDENTITY_LAYER = 1


@pytest.fixture(scope="module")
def constructed_llm(tmp_path_factory) -> Path:
    """A 3-layer Qwen2 whose layer 1 is the identity and whose layers 0 and 2 output one constant.

    On one token a layer is x + o_proj(v_proj(norm(x))) + mlp(...). Identity: o_proj = 0, down_proj = 0.
    Destroyer: v_proj's weight 0 and a bias of 1e9, so the attention adds a constant that swamps x in
    float32 (spacing 64 at 1e9), and down_proj = 0: the output is the same vector for every input.
    """
    config = Qwen2Config(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    model = Qwen2Model(config)
    with torch.no_grad():
        for index, layer in enumerate(model.layers):
            layer.mlp.down_proj.weight.zero_()
            if index == IDENTITY_LAYER:
                layer.self_attn.o_proj.weight.zero_()
            else:
                layer.self_attn.v_proj.weight.zero_()
                layer.self_attn.v_proj.bias.fill_(1e9)
                layer.self_attn.o_proj.weight.copy_(torch.eye(HIDDEN))
    path = tmp_path_factory.mktemp("constructed") / "llm"
    model.save_pretrained(path)
    return path


def separable(seed: int = 0, num_classes: int = 2, spread: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % num_classes
    features = rng.normal(size=(N, D_SLM)) + spread * rng.normal(size=(num_classes, D_SLM))[labels]
    return features.astype(np.float32), labels


def test_the_constructed_layers_do_what_they_claim(constructed_llm):
    x = torch.randn(5, HIDDEN)
    assert torch.equal(build_plugged_layer(constructed_llm, IDENTITY_LAYER)(x), x)
    out = build_plugged_layer(constructed_llm, 0)(x)
    assert torch.equal(out, out[:1].expand_as(out))  # one constant row, whatever the input


@pytest.mark.parametrize("num_classes", [2, 3])
def test_plugin_probe_finds_the_layer_that_keeps_the_signal(constructed_llm, num_classes):
    features, labels = separable(num_classes=num_classes)
    details: dict = {}
    scores = score_plugged_layers(features, labels, constructed_llm, epochs=15, learning_rate=3e-3, details=details)
    assert len(scores) == 3 and best_layer(scores) == IDENTITY_LAYER
    assert scores[IDENTITY_LAYER] > 0.9
    # A constant input leaves the head one guess: at most the largest class's share of the held-out rows.
    assert max(scores[0], scores[2]) <= 1 / num_classes + 0.05
    assert details["layers"] == [0, 1, 2] and len(details["model_accuracy"][0]) == 4 * 2  # folds x inits


def test_plugin_probe_is_deterministic_and_scores_only_the_layers_asked(constructed_llm):
    features, labels = separable(seed=1)
    first = score_plugged_layers(features, labels, constructed_llm, layers=[2, 1], epochs=3)
    assert first == score_plugged_layers(features, labels, constructed_llm, layers=[2, 1], epochs=3)
    assert first == train_and_score(features, labels, constructed_llm, PluginProbeParams(epochs=3), layers=[2, 1])
    assert len(first) == 2 and first[1] > first[0]


def test_score_loss_is_minus_the_held_out_loss_of_the_same_plug_ins(constructed_llm):
    features, labels = separable(seed=1)
    details: dict = {}
    accuracy = score_plugged_layers(features, labels, constructed_llm, epochs=3, details=details)
    loss = score_plugged_layers(features, labels, constructed_llm, epochs=3, score="loss")
    assert loss == [-value for value in details["held_out_loss"]] and loss != accuracy
    assert best_layer(loss) == IDENTITY_LAYER
    with pytest.raises(ValueError, match="score='auc' must be 'accuracy' or 'loss'"):
        score_plugged_layers(features, labels, constructed_llm, score="auc")


def test_bad_inputs_say_what_is_wrong(constructed_llm):
    features, labels = separable()
    with pytest.raises(ValueError, match="N x d_slm"):
        score_plugged_layers(features[:-1], labels, constructed_llm)
    with pytest.raises(ValueError, match="at least 2 classes"):
        score_plugged_layers(features, np.zeros(N, dtype=int), constructed_llm)
    with pytest.raises(ValueError, match="folds=60"):
        score_plugged_layers(features, labels, constructed_llm, folds=60)
    with pytest.raises(TypeError):
        score_plugged_layers(features, labels, constructed_llm, unknown=1)


def independent_runs(features: torch.Tensor, labels: torch.Tensor, plug, params: PluginProbeParams,
                     folds: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Each fold's plug-in trained on its own as PiFi's modules (nn.Linear, Adam, clip_grad_norm_), from
    the same initial weights and batch order as the stacked probe, dropout off; held-out loss each."""
    generator = torch.Generator().manual_seed(params.seed)
    models = []
    for _ in folds:
        layers = {}
        for name, (fan_in, fan_out) in {"to_llm": (D_SLM, HIDDEN), "from_llm": (HIDDEN, D_SLM),
                                        "hidden": (D_SLM, D_SLM), "out": (D_SLM, 2)}.items():
            weight, bias = _linear_weight(fan_in, fan_out, generator)
            linear = nn.Linear(fan_in, fan_out, bias=name in ("hidden", "out"))
            with torch.no_grad():
                linear.weight.copy_(weight.T)
                if linear.bias is not None:
                    linear.bias.copy_(bias)
            layers[name] = linear
        models.append(nn.Sequential(layers["to_llm"], plug, layers["from_llm"], layers["hidden"], nn.GELU(),
                                    layers["out"]))
    optimizers = [torch.optim.Adam(m.parameters(), lr=params.learning_rate) for m in models]
    order_generator = torch.Generator().manual_seed(params.seed)
    batch = params.batch_size
    steps = min(len(train) for train, _ in folds) // batch
    for _ in range(params.epochs):
        orders = [torch.as_tensor(train)[torch.randperm(len(train), generator=order_generator)] for train, _ in folds]
        for step in range(steps):
            for model, optimizer, order in zip(models, optimizers, orders):
                rows = order[step * batch:(step + 1) * batch]
                loss = nn.functional.cross_entropy(model(features[rows]), labels[rows],
                                                   label_smoothing=params.label_smoothing)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], params.grad_clip)
                optimizer.step()
    with torch.no_grad():
        return [float(nn.functional.cross_entropy(model(features[torch.as_tensor(held)]), labels[torch.as_tensor(held)]))
                for model, (_, held) in zip(models, folds)]


def test_stacked_training_equals_independent_runs_with_per_model_clipping(tiny_qwen2_dir):
    """The batched probe is M ordinary training runs: same accuracies from plain nn modules trained one by
    one. grad_clip is small enough to bite, so clipping across models instead of per model would differ."""
    from sklearn.model_selection import StratifiedKFold

    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tiny_qwen2_dir).hidden_size == HIDDEN
    features, labels = separable(seed=2, spread=0.3)
    features, labels = torch.as_tensor(features), torch.as_tensor(labels)
    params = PluginProbeParams(folds=3, inits=1, epochs=4, batch_size=16, dropout=0.0, grad_clip=0.05,
                               learning_rate=3e-3)
    plug = build_plugged_layer(tiny_qwen2_dir, 0)
    stacked = plugged_layer_accuracy(features, labels, plug, HIDDEN, params)["loss"]
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(labels, labels))
    expected = independent_runs(features, labels, plug, params, folds)
    assert stacked == pytest.approx(expected, rel=1e-5)
    untrained = independent_runs(features, labels, plug, PluginProbeParams(**{**vars(params), "epochs": 0}), folds)
    assert np.mean(expected) < np.mean(untrained) - 0.01  # it trained: held-out loss fell


# --- features: finetuned ---------------------------------------------------------------------------------

def test_finetuned_cls_vectors_are_those_of_the_base_runs_encoder(tmp_path):
    """cls_features_finetuned's vectors: the encoder of a base run's checkpoint, loaded through its spec,
    not the pretrained SLM's; a checkpoint that does not fit the spec is refused naming the file."""
    import pandas as pd

    from pifi.artifacts import ArtifactError, write_safetensors
    from pifi.model import ModelSpec, build_classifier
    from pifi.trained_runs import load_trained_classifier
    from pifi.plugin_probe import cls_vectors
    from tiny_project import write_tiny_models

    texts = ["good film", "bad film", "great plot", "awful plot"]
    slm = write_tiny_models(tmp_path, texts)["tiny_bert"]
    spec = ModelSpec(method="base", slm_path=str(slm), num_labels=2)
    torch.manual_seed(0)
    trained = build_classifier(spec)
    with torch.no_grad():  # what fine-tuning does to the encoder, in one step
        for parameter in trained.encoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    checkpoint = tmp_path / "model.safetensors"
    write_safetensors(checkpoint, trained.trainable_state_dict())
    frame = pd.DataFrame({"text": texts})

    loaded = load_trained_classifier(spec, checkpoint)
    tuned = cls_vectors(slm, frame, max_length=16, encoder=loaded.encoder)
    pretrained = cls_vectors(slm, frame, max_length=16)
    trained.eval()
    with torch.no_grad():
        from transformers import AutoTokenizer
        batch = AutoTokenizer.from_pretrained(slm)(texts, truncation=True, max_length=16, padding=True,
                                                   return_tensors="pt")
        expected = trained.encoder(**batch).last_hidden_state[:, 0]
    assert torch.allclose(tuned, expected, atol=1e-6)
    assert not torch.allclose(tuned, pretrained, atol=1e-3)

    wrong = tmp_path / "other.safetensors"
    write_safetensors(wrong, {"head.0.weight": torch.zeros(3, 3)})
    with pytest.raises(ArtifactError, match="other.safetensors does not fit its model spec"):
        load_trained_classifier(spec, wrong)


def test_features_names_whose_cls_vectors_and_is_checked():
    from pifi.selectors import ALL_SELECTORS, SELECTORS, declared
    from pifi.selectors.plugin_probe import reads_finetuned

    finetuned = declared("plugin_probe_finetuned")
    assert reads_finetuned(finetuned.defaults) and not reads_finetuned(declared("plugin_probe").defaults)
    assert "plugin_probe_finetuned" in ALL_SELECTORS and "plugin_probe_finetuned" not in SELECTORS  # opt-in
    labels = np.arange(40) % 2
    with pytest.raises(ValueError, match="features='tuned' must be one of pretrained, finetuned"):
        PluginProbeParams(features="tuned").check(labels)
