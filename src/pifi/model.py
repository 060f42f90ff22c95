"""The classifiers: an SLM alone (``base``) or with one frozen LLM layer plugged in (PiFi).

    text -> SLM encoder -> CLS state -> [Linear(d_slm -> d_llm, no bias) -> frozen LLM layer
         -> Linear(d_llm -> d_slm, no bias)] -> Linear(d, d) -> Dropout -> GELU -> Linear(d, C)

The bracketed part is PiFi's; ``base`` skips it. A checkpoint holds every tensor except the frozen
layer, which is rebuilt from the LLM it came from (recorded in the model spec).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from pifi.model_sources import LOAD_KWARGS
from pifi.plugged_layer import PluggedDecoderLayer, build_plugged_layer, text_config

FROZEN_PREFIX = "plug."


@dataclass
class ModelSpec:
    """Everything needed to rebuild a classifier; saved beside its checkpoint as JSON."""

    method: str
    slm_path: str
    num_labels: int
    dropout: float = 0.2
    llm_path: str | None = None
    llm_layer: int | None = None
    max_length: int = 100
    slm_trust_remote_code: bool = False
    llm_trust_remote_code: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class PiFiClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float,
                 plug: PluggedDecoderLayer | None = None, llm_hidden: int | None = None):
        super().__init__()
        d = encoder.config.hidden_size
        self.encoder = encoder
        self.plug = plug
        if plug is not None:
            self.to_llm = nn.Linear(d, llm_hidden, bias=False)
            self.from_llm = nn.Linear(llm_hidden, d, bias=False)
        self.head = nn.Sequential(nn.Linear(d, d), nn.Dropout(dropout), nn.GELU(), nn.Linear(d, num_labels))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        pooled = states[:, 0]
        if self.plug is not None:
            pooled = self.from_llm(self.plug(self.to_llm(pooled)))
        return self.head(pooled)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without the frozen layer (it is rebuilt from its LLM)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(FROZEN_PREFIX)}


def _load_encoder(slm_path: str, *, pretrained: bool, trust_remote_code: bool) -> nn.Module:
    if pretrained:
        encoder = AutoModel.from_pretrained(slm_path, trust_remote_code=trust_remote_code, **LOAD_KWARGS)
    else:
        config = AutoConfig.from_pretrained(slm_path, trust_remote_code=trust_remote_code)
        encoder = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # PiFi reads the CLS state; an unused pooler would only inflate the count
    return encoder


def build_classifier(spec: ModelSpec, *, pretrained: bool = True) -> PiFiClassifier:
    """Build the classifier of ``spec``; with ``pretrained=False`` the SLM gets only its architecture
    (for loading a checkpoint), while the plugged layer always comes from the LLM's weights."""
    encoder = _load_encoder(spec.slm_path, pretrained=pretrained, trust_remote_code=spec.slm_trust_remote_code)
    plug, llm_hidden = None, None
    if spec.llm_path is not None:
        plug = build_plugged_layer(spec.llm_path, spec.llm_layer, trust_remote_code=spec.llm_trust_remote_code)
        llm_hidden = text_config(spec.llm_path, trust_remote_code=spec.llm_trust_remote_code).hidden_size
    return PiFiClassifier(encoder, spec.num_labels, spec.dropout, plug, llm_hidden)


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total}
