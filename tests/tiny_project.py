"""A tiny but complete project for workflow tests: models built from configs, data, a config file.

The models are random-weight BERT and Llama models of a few layers with hidden size 32, saved
with save_pretrained, and a word-level tokenizer built from the data. The data are two generated
keyword tasks (``keyword_splits``), written as local JSONL files: a binary ``sentiment`` and a
3-class ``topics``. A class keyword in every text decides its label, among filler words of varied
length, so the few optimizer steps of the end-to-end run are enough for the tiny models to learn
it: a prediction bug (wrong weights, rows out of order) then shows in the accuracies, which it
could not while every model predicted one class.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pandas as pd
import torch
import yaml
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
LLM_LAYERS = 3
# The class keywords of each task (label k <- keyword k) and the words around them (no keyword).
KEYWORDS = {"sentiment": ("awful", "superb"), "topics": ("football", "chemistry", "baking")}
FILLER_WORDS = ("the", "a", "this", "that", "was", "is", "film", "story", "day", "team", "lab", "kitchen",
                "really", "quite", "very", "and", "but", "then", "we", "they", "saw", "made", "about",
                "long", "short", "old", "new", "one", "two", "again", "today", "here", "there", "so")
KEYWORD_SPLIT_SIZES = {"train": 240, "validation": 96, "test": 96}
MIN_WORDS, MAX_WORDS = 2, 24  # filler words per text: rows of many lengths
# Keyword copies per filler word (at least one a text). At BERT's init the CLS state hardly depends on the
# other tokens; a single keyword among 20 words took more steps to learn than the run takes.
KEYWORD_SHARE = 0.3
# Share of rows whose label is moved to another class (their keyword kept): no model scores 100 %, so
# accuracies, their intervals and the methods' differences are not all degenerate.
LABEL_NOISE = 0.08


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


def keyword_splits(task: str, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The splits of keyword task ``task``: classes about balanced in each split, lengths varied, seeded."""
    keywords = KEYWORDS[task]
    rng = random.Random(f"{task}-{seed}")  # a string seed does not depend on hash randomisation
    splits = {}
    for split, size in KEYWORD_SPLIT_SIZES.items():
        rows = []
        for i in range(size):
            label = i % len(keywords)
            words = rng.choices(FILLER_WORDS, k=rng.randint(MIN_WORDS, MAX_WORDS))
            for _ in range(max(1, round(KEYWORD_SHARE * len(words)))):
                words.insert(rng.randrange(len(words) + 1), keywords[label])
            if rng.random() < LABEL_NOISE:
                label = (label + rng.randrange(1, len(keywords))) % len(keywords)
            rows.append({"text": " ".join(words), "label": label})
        rng.shuffle(rows)  # labels not in a cycle: row order must not predict the label
        splits[split] = pd.DataFrame(rows)
    return splits


def write_keyword_dataset(directory: Path, task: str) -> dict[str, pd.DataFrame]:
    """Write ``keyword_splits(task)`` as ``{train,validation,test}.jsonl`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    splits = keyword_splits(task)
    for split, frame in splits.items():
        with open(directory / f"{split}.jsonl", "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in frame.to_dict("records"))
    return splits


def leak_test_rows(directory: Path, n: int) -> None:
    """Make the first ``n`` test rows of a written keyword dataset copies of training rows (text and label)."""
    train = pd.read_json(directory / "train.jsonl", lines=True)
    test = pd.read_json(directory / "test.jsonl", lines=True)
    test.iloc[:n] = train.iloc[:n].to_numpy()
    test.to_json(directory / "test.jsonl", orient="records", lines=True)


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
                       datasets: tuple[str, ...] = ("sentiment", "topics"), model_seed: int = 0) -> Path:
    """Write models, the keyword datasets ``datasets`` and a config under ``root``; return the config path."""
    root = Path(root)
    sample_texts = []
    for task in KEYWORDS:  # both tasks' words in the vocabulary, whichever datasets run
        sample_texts += write_keyword_dataset(root / "data" / task, task)["train"]["text"].tolist()
    with torch.random.fork_rng():
        torch.manual_seed(model_seed)  # the same random weights every time: the run's accuracies are reproducible
        paths = write_tiny_models(root, sample_texts)
    models = {name: {"source": "local", "name": name, "path": str(path)} for name, path in paths.items()}
    config = {
        "run": {"datasets": list(datasets), "slms": ["tiny_bert"], "llms": ["tiny_llama"],
                "methods": ["base", "pifi_last", "pifi_ilm", "pifi_sweep"], "seeds": list(seeds)},
        "datasets": {task: {"source": "local", "path": str(root / "data" / task)} for task in KEYWORDS},
        "models": models,
        # Four selectors keep the run short (each has its own unit tests): the reference experiment's, a state one, a
        # baseline, and plugin_probe, which has rules of its own (CLS vectors, per-layer plug-ins).
        "selection": {"n_samples": 48, "n_pcs": 4, "top_pc": 2, "max_length": 32, "batch_size": 16,
                      "stability_resamples": 3, "selectors": ["ilm_pc_patching", "fisher", "middle", "plugin_probe"],
                      "selector_params": {"plugin_probe": {"epochs": 2, "inits": 1, "folds": 3}}},
        "sweep": {"layers": [0, 2]},
        "statistics": {"n_resamples": 1000},
        # 32 steps at 5e-3 learn the keyword tasks (every run beat the majority class by far); the
        # dropout differs from the default so that a run ignoring the setting shows.
        "training": {"epochs": 4, "batch_size": 8, "eval_batch_size": 32, "learning_rate": 5e-3, "dropout": 0.1,
                     "max_length": 32, "max_train_samples": 64, "max_eval_samples": 48},
        "device": "cpu",
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
