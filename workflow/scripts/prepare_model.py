"""Make a model available locally (hub download, package files, or a one-off GGUF conversion)."""

from pathlib import Path

from pifi.artifacts import write_json
from pifi.job import config_base, start_job
from pifi.model_sources import describe_model, resolve_model_dir

log = start_job(snakemake)
spec = snakemake.params.spec
manifest_path = Path(snakemake.output.manifest)
path = resolve_model_dir(snakemake.wildcards.model, spec, work_dir=manifest_path.parent,
                         base_dir=config_base(snakemake))
manifest = describe_model(snakemake.wildcards.model, path, trust_remote_code=spec.get("trust_remote_code", False))
manifest["source"] = spec
log.info("model %s: %s", snakemake.wildcards.model, manifest)
write_json(manifest_path, manifest)
