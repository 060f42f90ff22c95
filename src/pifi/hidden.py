"""Per-layer pooled hidden states of a decoder LLM, from one forward pass.

For decoder layer l (0-based), the state is the attention-mask-weighted mean of
``hidden_states[l + 1]`` over the tokens of each text: padding never contributes. Note that
transformers returns the *last* layer's state after the model's final norm, so the last layer is
not on the same scale as the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm


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
    for start in tqdm(range(0, len(order), batch_size), desc="hidden states", disable=not progress):
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


def load_llm_for_states(path, *, device: torch.device, trust_remote_code: bool = False):
    """The LLM's base model (no LM head) and tokenizer, fp32 on CPU and bf16 on GPU."""
    from transformers import AutoModel, AutoTokenizer

    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else (
        torch.float16 if device.type == "cuda" else torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Decoder tokenizers often have no pad token; any id works because the mask hides it.
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code).to(device)
    return model, tokenizer


def save_states(path, states: torch.Tensor, labels, *, metadata: dict[str, str] | None = None) -> None:
    """Write L x N x H states and N labels as one safetensors file (atomically)."""
    from pifi.artifacts import write_safetensors

    write_safetensors(path, {"states": states.to(torch.float32),
                             "labels": torch.as_tensor(labels, dtype=torch.long)}, metadata)


def load_states(path):
    """Read what ``save_states`` wrote: (L x N x H float32 array, N int labels)."""
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    return tensors["states"], tensors["labels"]
