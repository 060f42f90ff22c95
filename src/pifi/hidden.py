"""Per-layer pooled hidden states of a decoder LLM, from one forward pass.

For decoder layer l (0-based), the state is the attention-mask-weighted mean of
``hidden_states[l + 1]`` over the tokens of each text: padding never contributes. Note that
transformers returns the *last* layer's state after the model's final norm, so the last layer is
not on the same scale as the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pifi.progress import progress as report_progress


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
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    pooled: list[torch.Tensor] = []
    starts = range(0, len(order), batch_size)
    for start in report_progress(starts, total=len(starts), desc="hidden states") if progress else starts:
        batch = [texts[i] for i in order[start:start + batch_size]]
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        encoded = {key: value.to(device) for key, value in encoded.items()}
        outputs = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                        output_hidden_states=True, use_cache=False)
        # hidden_states[0] is the embedding output; [l + 1] is decoder layer l.
        layers = [masked_mean(h, encoded["attention_mask"]) for h in outputs.hidden_states[1:]]
        pooled.append(torch.stack(layers).cpu())
    states = torch.cat(pooled, dim=1)
    restore = torch.empty(len(order), dtype=torch.long)
    restore[torch.tensor(order)] = torch.arange(len(order))
    return states[:, restore]


def load_llm_for_states(path, *, device: torch.device, dtype: str = "float32", trust_remote_code: bool = False):
    """The LLM's base model (no LM head) and tokenizer, weights only from safetensors.

    float32 by default on every device, so the same data give the same states (and layer) on CPU
    and GPU; bfloat16 halves memory for large LLMs (GPU only: CPU bf16 matmuls are slow).
    """
    from transformers import AutoModel, AutoTokenizer

    from pifi.model_sources import LOAD_KWARGS

    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    ensure_pad_token(tokenizer)
    model = AutoModel.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                      **LOAD_KWARGS).to(device)
    return model, tokenizer


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
