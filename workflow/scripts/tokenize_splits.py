"""Token ids of every split for one SLM: the training jobs read them instead of tokenizing."""

from transformers import AutoTokenizer

from pifi.artifacts import read_parquet, write_safetensors
from pifi.hidden import ensure_pad_token
from pifi.job import start_job
from pifi.model_sources import ModelRef
from pifi.tokens import SPLITS, tokenize_split

log = start_job(snakemake)
slm = ModelRef.from_manifest(snakemake.input.slm)
tokenizer = AutoTokenizer.from_pretrained(slm.path, trust_remote_code=slm.trust_remote_code)
ensure_pad_token(tokenizer)
tensors = {}
for split in SPLITS:
    frame = read_parquet(snakemake.input[split])
    tensors.update(tokenize_split(tokenizer, frame, snakemake.params.max_length, split))
    lengths = tensors[f"{split}.lengths"]
    log.info("%s: %d rows, %d tokens (longest %d, %d truncated at %d)", split, len(frame), int(lengths.sum()),
             int(lengths.max()), int((lengths >= snakemake.params.max_length).sum()), snakemake.params.max_length)
write_safetensors(snakemake.output.tokens, tensors,
                  {"pad_token_id": str(tokenizer.pad_token_id), "max_length": str(snakemake.params.max_length),
                   "slm": snakemake.wildcards.slm})
