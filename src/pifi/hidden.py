"""Per-layer pooled hidden states of a decoder LLM.

For decoder layer l (0-based), the state is the attention-mask-weighted mean of
``hidden_states[l + 1]`` over the tokens of each text: padding never contributes. Note that
transformers returns the *last* layer's state after the model's final norm, so the last layer is
not on the same scale as the others; both paths below keep that convention.

Two paths give the same numbers (bit for bit in float32, tests/test_hidden_streaming.py):

- ``streamed_layer_states`` (what the workflow runs): layer-major. The token embeddings once,
  then each decoder layer is built from its own tensors (``pifi.plugged_layer.DecoderCheckpoint``),
  every text goes through it, its pooled state is kept, and the layer is freed before the next is
  read. Memory: one layer + the texts' activations (N x T x H), whatever the LLM's depth.
- ``pooled_layer_states`` (the whole model loaded, one forward pass per batch): the reference the
  streamed path is tested against, and the fallback for architectures it does not know.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from pifi.progress import progress as report_progress

log = logging.getLogger(__name__)

# Base models whose forward is exactly: embed_tokens -> causal mask(s) + rotary embedding -> layers ->
# norm, which is what the streamed pass redoes (read in transformers 5.24; Gemma, e.g., scales its
# embeddings and is not here). Others take the whole-model path.
STREAMED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the sequence of ``hidden`` (B x T x H), counting only tokens where the mask is 1."""
    keep = attention_mask.bool().unsqueeze(-1)
    # masked_fill, not a product: inf * 0 would turn an overflowed pad position into NaN.
    summed = hidden.to(torch.float32).masked_fill(~keep, 0.0).sum(dim=1)
    return summed / keep.sum(dim=1).clamp(min=1).to(torch.float32)


@torch.inference_mode()
def pooled_layer_states(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int = 128,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """Return an L x N x H float32 tensor: every decoder layer's pooled state for every text.

    Texts are batched by length (less padding), and the result is put back in input order.
    """
    device = torch.device(device)
    model.eval()
    batches = list(_length_sorted_batches(tokenizer, texts, max_length=max_length, batch_size=batch_size))
    pooled: list[torch.Tensor] = []
    for _, encoded in report_progress(batches, total=len(batches), desc="hidden states") if progress else batches:
        encoded = {key: value.to(device) for key, value in encoded.items()}
        outputs = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                        output_hidden_states=True, use_cache=False)
        # hidden_states[0] is the embedding output; [l + 1] is decoder layer l.
        layers = [masked_mean(h, encoded["attention_mask"]) for h in outputs.hidden_states[1:]]
        pooled.append(torch.stack(layers).cpu())
    states = torch.cat(pooled, dim=1)
    order = torch.cat([rows for rows, _ in batches])
    restore = torch.empty(len(order), dtype=torch.long)
    restore[order] = torch.arange(len(order))
    return states[:, restore]


def _length_sorted_batches(tokenizer, texts: Sequence[str], *, max_length: int,
                           batch_size: int) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(row indices, encoded batch) over the texts sorted by length (less padding); both paths share it,
    so their batches, and with them their padding, are the same."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        encoded = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
        yield torch.tensor(rows, dtype=torch.long), {key: encoded[key] for key in ("input_ids", "attention_mask")}


def can_stream(config) -> bool:
    """Whether ``streamed_layer_states`` knows this architecture's forward (see STREAMED_MODEL_TYPES)."""
    return getattr(config, "model_type", None) in STREAMED_MODEL_TYPES


def _mask_kinds(config) -> list[str]:
    """Which causal mask each decoder layer gets, as the model's own forward decides it."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:  # qwen2, qwen3: full or sliding per layer
        return list(layer_types[:config.num_hidden_layers])
    if config.model_type == "mistral" and getattr(config, "sliding_window", None) is not None:
        return ["sliding_attention"] * config.num_hidden_layers
    return ["full_attention"] * config.num_hidden_layers


@torch.inference_mode()
def streamed_layer_states(
    model_dir: str | Path,
    texts: Sequence[str],
    *,
    tokenizer=None,
    max_length: int = 128,
    batch_size: int = 32,
    dtype: str | torch.dtype = "float32",
    device: torch.device | str = "cpu",
    trust_remote_code: bool = False,
    progress: bool = True,
) -> torch.Tensor:
    """``pooled_layer_states`` of the LLM in ``model_dir``, one decoder layer in memory at a time.

    Returns the same L x N x H float32 tensor in input order: the same length-sorted batches, the same
    causal + padding masks (transformers' own ``create_causal_mask``), position ids 0..T-1 whatever the
    padding side, and the last layer's state after the final norm. ``dtype`` is that of the weights
    and activations (bfloat16 halves both for large LLMs); the pooled states are always accumulated
    in float32.
    """
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    from pifi.plugged_layer import DecoderCheckpoint

    device = torch.device(device)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if tokenizer is None:
        tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    checkpoint = DecoderCheckpoint(model_dir, trust_remote_code=trust_remote_code)
    config = checkpoint.config
    if not can_stream(config):
        raise ValueError(f"streaming does not know model type {config.model_type!r} "
                         f"(known: {sorted(STREAMED_MODEL_TYPES)}); use pooled_layer_states")
    if not texts:
        return torch.empty(checkpoint.num_layers, 0, config.hidden_size, dtype=torch.float32)
    batches = list(_length_sorted_batches(tokenizer, texts, max_length=max_length, batch_size=batch_size))

    # Token embeddings once, looked up in the stored dtype (exact) and cast per batch: the vocabulary
    # matrix is never cast whole.
    embed = checkpoint.module("embed_tokens")
    hidden = [embed(encoded["input_ids"]).to(device=device, dtype=dtype) for _, encoded in batches]
    del embed

    # Per batch, what every layer shares: the masks, the position ids, the rotary cos/sin.
    rotary = checkpoint.rotary_emb()
    rotary = rotary.to(device) if rotary is not None else None
    kinds = _mask_kinds(config)
    makers = {"full_attention": create_causal_mask, "sliding_attention": create_sliding_window_causal_mask}
    shared = []
    for (_, encoded), h in zip(batches, hidden):
        attention = encoded["attention_mask"].to(device)
        # As the base model's forward: arange, not shifted by (left) padding.
        positions = torch.arange(h.shape[1], device=device).unsqueeze(0)
        masks = {kind: makers[kind](config=config, inputs_embeds=h, attention_mask=attention, cache=None,
                                    position_ids=positions) for kind in set(kinds)}
        kwargs = {"position_ids": positions}
        if rotary is not None:
            kwargs["position_embeddings"] = rotary(h, positions)
        shared.append((attention, masks, kwargs))

    norm = checkpoint.module("norm", dtype=dtype).to(device)
    states = torch.empty(checkpoint.num_layers, len(texts), config.hidden_size, dtype=torch.float32)
    order = torch.cat([rows for rows, _ in batches])
    layers = range(checkpoint.num_layers)
    for index in report_progress(layers, total=len(layers), desc="layers (streamed)") if progress else layers:
        layer = checkpoint.layer(index, dtype=dtype, device=device)
        pooled = []
        for b, (attention, masks, kwargs) in enumerate(shared):
            out = layer(hidden[b], attention_mask=masks[kinds[index]], use_cache=False, **kwargs)
            out = out[0] if isinstance(out, tuple) else out
            if index == checkpoint.num_layers - 1:
                out = norm(out)  # transformers' convention: the last hidden state is after the final norm
                hidden[b] = None  # no next layer: free as we go
            else:
                hidden[b] = out
            pooled.append(masked_mean(out, attention).cpu())
        states[index, order] = torch.cat(pooled)
        # Free this layer before the next one is read: memory stays at one layer. Reference counting
        # frees it here (a layer holds no reference cycle; tested), so no gc.collect(), which costs
        # ~0.2 s with transformers imported.
        del layer, out
    return states


def load_llm_for_states(path, *, device: torch.device, dtype: str = "float32", trust_remote_code: bool = False):
    """The LLM's whole base model (no LM head) and tokenizer, weights only from safetensors: for
    ``pooled_layer_states`` (the reference and fallback path; the workflow streams instead).

    float32 by default on every device, so the same data give the same states (and layer) on CPU
    and GPU; bfloat16 halves memory for large LLMs (GPU only: CPU bf16 matmuls are slow).
    """
    from transformers import AutoModel

    from pifi.model_sources import LOAD_KWARGS

    torch_dtype = getattr(torch, dtype)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    model = AutoModel.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                      **LOAD_KWARGS).to(device)
    return model, tokenizer


def load_tokenizer(path, *, trust_remote_code: bool = False):
    """The LLM's tokenizer, with a pad token (``ensure_pad_token``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    ensure_pad_token(tokenizer)
    return tokenizer


def llm_layer_states(path, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 32,
                     dtype: str = "float32", device: torch.device | str = "cpu", trust_remote_code: bool = False,
                     progress: bool = True) -> torch.Tensor:
    """Every decoder layer's pooled state (L x N x H float32) for the LLM in ``path``: streamed layer by
    layer where the architecture is known (``can_stream``), else from the whole model, loaded once."""
    from pifi.plugged_layer import text_config

    kwargs = dict(max_length=max_length, batch_size=batch_size, device=device, progress=progress)
    if can_stream(text_config(path, trust_remote_code=trust_remote_code)):
        return streamed_layer_states(path, texts, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    log.warning("model type of %s is not one the streamed pass knows (%s): loading the whole model",
                path, ", ".join(sorted(STREAMED_MODEL_TYPES)))
    model, tokenizer = load_llm_for_states(path, device=torch.device(device), dtype=dtype,
                                           trust_remote_code=trust_remote_code)
    return pooled_layer_states(model, tokenizer, texts, **kwargs)


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token one it already has (eos, else unk, else id 0).

    Decoder tokenizers often have no pad token; any id works because the attention mask hides it,
    and reusing a known token keeps the embedding matrix as it is.
    """
    if tokenizer.pad_token is not None:
        return
    fallback = tokenizer.eos_token or tokenizer.unk_token or tokenizer.convert_ids_to_tokens(0)
    tokenizer.pad_token = fallback


def save_states(path, states: torch.Tensor, labels, *, metadata: dict[str, str] | None = None) -> None:
    """Write L x N x H states and N labels as one safetensors file (atomically)."""
    from pifi.artifacts import write_safetensors

    # np.array copies: pandas' arrays may be read-only, which torch warns about.
    write_safetensors(path, {"states": states.to(torch.float32),
                             "labels": torch.as_tensor(np.array(labels), dtype=torch.long)}, metadata)


def load_states(path):
    """Read what ``save_states`` wrote, checksum verified: (L x N x H float32 array, N int labels)."""
    from pifi.artifacts import read_safetensors

    tensors, _ = read_safetensors(path, framework="np")
    return tensors["states"], tensors["labels"]
