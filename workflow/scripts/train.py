"""Fine-tune one classifier (base, or PiFi with one LLM layer), save it and its test and validation predictions;
or, for a race's first rung, train its first epochs and keep the checkpoint the full run continues from."""

import time

# The time is taken before the heavy imports: timings.json says what this job's start-up cost.
STARTED_AT = time.time()

import hashlib
from pathlib import Path

from pifi.artifacts import read_json, read_parquet, read_safetensors, write_json, write_parquet, write_safetensors
from pifi.evaluation import predictions_frame
from pifi.job import console_line, job_device, release_device, start_job
from pifi.model import ModelSpec, build_classifier, count_parameters
from pifi.model_sources import ModelRef
from pifi.progress import echo_to_console
from pifi.resume import ResumeStore, fingerprint
from pifi.run_progress import report_finished_run
from pifi.tokens import TokenizedSplit, capped_rows
from pifi.training import TrainingConfig, seed_everything, train_and_predict, train_classifier

EVAL_ROWS_SEED = 0  # capped validation/test rows are the same for every run, so runs stay paired

log = start_job(snakemake)
# Claimed before anything that might ask torch about CUDA (loading a model can): CUDA reads
# CUDA_VISIBLE_DEVICES, which the claim sets, once, at its first use.
device = job_device(snakemake)
wc, inp, out, t = snakemake.wildcards, snakemake.input, snakemake.output, snakemake.params.training
seed, layer = int(wc.seed), int(wc.layer) if "layer" in wc.keys() else None

llm_path, llm_remote_code, num_layers = None, False, None
if layer is not None:
    llm = ModelRef.from_manifest(inp.llm)
    llm.check_layer(layer)
    llm_path, llm_remote_code, num_layers = str(llm.path), llm.trust_remote_code, llm.num_layers
    log.info("plugging layer %d of %s (%d layers)", layer, llm.name, llm.num_layers)

slm = ModelRef.from_manifest(inp.slm)
spec = ModelSpec(method="base" if layer is None else "pifi", slm_path=str(slm.path),
                 num_labels=read_json(inp.info)["num_labels"], dropout=t["dropout"], llm_path=llm_path,
                 llm_layer=layer, max_length=t["max_length"], slm_trust_remote_code=slm.trust_remote_code,
                 llm_trust_remote_code=llm_remote_code)
seed_everything(seed)  # the new head and projections start from the run's seed
model = build_classifier(spec)
params = count_parameters(model)
log.info("parameters: %s", params)

tokens, meta = read_safetensors(inp.tokens, framework="pt")
pad_id = int(meta["pad_token_id"])
rows = {"train": capped_rows(len(tokens["train.lengths"]), t["max_train_samples"], seed),
        **{split: capped_rows(len(tokens[f"{split}.lengths"]), t["max_eval_samples"], EVAL_ROWS_SEED)
           for split in ("validation", "test")}}
splits = {split: TokenizedSplit.from_tensors(tokens, split, pad_id=pad_id, width=t["max_length"], rows=r)
          for split, r in rows.items()}
cfg = TrainingConfig.from_config(t, seed)
log.info("training on %d rows, validating on %d, device %s", len(splits["train"]), len(splits["validation"]), device)
tokens_digest = hashlib.sha256(Path(inp.tokens).read_bytes()).hexdigest()
# A race's first rung (params.stop_after_epoch) trains the run of its run_dir and stops early: the epoch
# checkpoint it leaves is where that run continues (the same fingerprint) when the rung keeps the layer.
stop_after = snakemake.params.get("stop_after_epoch")
run_dir = Path(snakemake.params.get("run_dir") or Path(out[0]).parent)
resume = ResumeStore(run_dir / "resume", fingerprint(t, spec.to_dict(), snakemake.params.code, tokens_digest))
what = f"{wc.dataset}/{wc.slm} " + ("base" if layer is None else f"+ {wc.llm} layer {layer}") + f" seed {seed}"
echo_to_console(console_line, what)  # its epochs and resume on the console under the run's name
if stop_after is not None:
    rung = train_classifier(model, splits["train"], splits["validation"], cfg, device, resume=resume,
                            stop_after_epoch=int(stop_after))
    release_device(device)
    resume.wait()
    best_so_far = max(r["validation_accuracy"] for r in rung.history)
    write_json(out.rung, {"layer": layer, "seed": seed, "epochs": rung.history, "best_validation_accuracy": best_so_far})
    console_line(f"PiFi: race, first rung: {what}: validation accuracy {100 * best_so_far:.1f}% after "
                 f"{len(rung.history)} of {cfg.epochs} epochs")
else:  # a whole run
    training_started_at = time.time()
    # Test predictions of the best epoch, in the test rows' order, from this process: evaluation needs
    # no second model load.
    result, probabilities = train_and_predict(model, splits["train"], splits["validation"], splits["test"], cfg,
                                              device, resume=resume)
    del model
    release_device(device)  # the next job on this GPU slot starts while this one writes its outputs
    test = read_parquet(inp.test, columns=["row_id", "label"]).iloc[rows["test"]]
    validation = read_parquet(inp.validation, columns=["row_id", "label"]).iloc[rows["validation"]]
    run = {"dataset": wc.dataset, "slm": wc.slm, "llm": wc.get("llm"), "method": spec.method, "llm_layer": layer,
           "num_layers": num_layers, "seed": seed}
    best = result.history[result.best_epoch - 1]
    write_parquet(out.predictions, predictions_frame(test["row_id"].tolist(), test["label"].to_numpy(), probabilities))
    write_parquet(out.validation_predictions, predictions_frame(validation["row_id"].tolist(), validation["label"].to_numpy(),
                                                                result.validation_probabilities))
    write_safetensors(out.checkpoint, result.best_state, metadata={"method": spec.method, "best_epoch": str(result.best_epoch)})
    write_json(out.spec, {"model": spec.to_dict(), "run": run, **params})
    write_json(out.history, {"best_epoch": result.best_epoch, "best_validation_accuracy": best["validation_accuracy"],
                             "epochs": result.history})
    # Wall-clock facts (they differ between identical runs, so they live apart from every other output).
    write_json(out.timings, {"device": str(device), "compiled": result.compiled, "steps": result.steps,
                             "samples": result.samples, "startup_seconds": round(training_started_at - STARTED_AT, 3),
                             "train_seconds": round(result.train_seconds, 3),
                             "started_at": round(STARTED_AT, 3), "finished_at": round(time.time(), 3),
                             "resumed_after_epoch": result.resumed_from_epoch})
    resume.clear()
    # The console line a person follows (Snakemake's own percentage falls as checkpoints add jobs).
    try:
        console_line(report_finished_run(snakemake.config, what, validation_accuracy=best["validation_accuracy"],
                                         best_epoch=result.best_epoch, epochs=cfg.epochs,
                                         seconds=time.time() - STARTED_AT))
    except Exception:  # noqa: BLE001 - the run's outputs are written; a progress line must not fail it
        log.exception("could not compute the progress line")
