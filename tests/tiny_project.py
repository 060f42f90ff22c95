"""A tiny but complete project for workflow tests: models built from configs, data, a config file.

The models are random-weight BERT and Llama models of a few layers with hidden size 32, saved
with save_pretrained, and a word-level tokenizer built from the data. The data are the real
SST-2 rows in ../shared/data when that folder exists (generated demo rows otherwise) plus the
project's 3-class demo topics.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from pifi.data import load_local_splits
from pifi.demo_data import demo_splits

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
LLM_LAYERS = 3


def word_tokenizer(texts: list[str], max_vocab: int = 2000) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over the most frequent words, BERT-style specials."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in re.findall(r"\w+|[^\w\s]", text.lower()):
            counts[word] = counts.get(word, 0) + 1
    words = sorted(counts, key=lambda w: -counts[w])[: max_vocab - len(SPECIALS)]
    vocab = {token: i for i, token in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def write_tiny_models(root: Path, texts: list[str]) -> dict[str, Path]:
    tokenizer = word_tokenizer(texts)
    vocab = len(tokenizer)
    bert = BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=128))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=48, num_hidden_layers=LLM_LAYERS,
                                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                                         max_position_embeddings=256, pad_token_id=0))
    paths = {}
    for name, model in (("tiny_bert", bert), ("tiny_llama", llama)):
        paths[name] = root / "models" / name
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths


def write_tiny_project(root: Path, *, seeds: tuple[int, ...] = (1, 2),
                       datasets: tuple[str, ...] = ("sst2_rows", "topics")) -> Path:
    """Write models, data references and a config under ``root``; return the config path."""
    root = Path(root)
    datasets = {"topics": {"source": "demo", "name": "topic"}}
    if (SHARED_DATA / "sst2").is_dir():
        datasets["sst2_rows"] = {"source": "local", "path": str(SHARED_DATA / "sst2")}
        sample_texts = load_local_splits(SHARED_DATA / "sst2")["train"]["text"].head(3000).tolist()
    else:
        datasets["sst2_rows"] = {"source": "demo", "name": "sentiment"}
        sample_texts = demo_splits("sentiment")["train"]["text"].tolist()
    sample_texts += demo_splits("topic")["train"]["text"].tolist()
    models = {name: {"source": "local", "name": name, "path": str(path)}
              for name, path in write_tiny_models(root, sample_texts).items()}
    config = {
        "run": {"datasets": list(datasets), "slms": ["tiny_bert"], "llms": ["tiny_llama"],
                "methods": ["base", "pifi_last", "pifi_ilm", "pifi_sweep"], "seeds": list(seeds)},
        "datasets": datasets,
        "models": models,
        # Three selectors keep the run short; each selector has its own unit tests.
        "selection": {"n_samples": 48, "n_pcs": 4, "top_pc": 2, "max_length": 32, "batch_size": 16,
                      "stability_resamples": 3, "selectors": ["ilm_pc_patching", "fisher", "middle"]},
        "sweep": {"layers": [0, 2]},
        "statistics": {"n_resamples": 1000},
        "training": {"epochs": 2, "batch_size": 16, "eval_batch_size": 32, "learning_rate": 1e-3,
                     "max_length": 32, "max_train_samples": 64, "max_eval_samples": 48},
        "device": "cpu",
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
