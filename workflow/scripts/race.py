"""A cut of the race (keep the best 1/eta of a rung's layers) or its result (the final rung's best layer)."""

import re
import shutil
from contextlib import suppress
from pathlib import Path

from pifi.artifacts import read_json, write_json
from pifi.job import console_line, start_job
from pifi.race import RaceSettings, cut, histories_from_files, race_cost, rung_scores, winner
from pifi.run_plan import pifi_run_dir

log = start_job(snakemake)
wc, p = snakemake.wildcards, snakemake.params
settings = RaceSettings(**p.race)
# Inputs named layer{L}_seed{S}: a run's history, or first_rung_layer{L}_seed{S}: a first rung's epochs.
runs = {name: re.fullmatch(r"(first_rung_)?layer(\d+)_seed(\d+)", name) for name in snakemake.input.keys()}
runs = {name: match for name, match in runs.items() if match}
histories = histories_from_files({(int(match[2]), int(match[3])): snakemake.input[name] for name, match in runs.items()})
where = f"{wc.dataset}/{wc.slm} + {wc.llm}"
if "rung" in wc.keys():
    rung = int(wc.rung)
    upto = min(settings.first_epochs, p.epochs) if rung == 1 else p.epochs  # the first rung's, then the recipe
    scores = rung_scores(histories, upto)
    kept = cut(scores, settings)
    # A dropped first rung's epoch checkpoint would never be continued: it goes (its rung's file stays).
    for match in runs.values():
        if match[1] and int(match[2]) not in kept:
            run_dir = Path(pifi_run_dir(wc.dataset, wc.slm, wc.llm, int(match[2]), int(match[3])))
            shutil.rmtree(run_dir / "resume", ignore_errors=True)
            with suppress(OSError):  # its seed and layer directories too, when nothing else is in them
                run_dir.rmdir()
                run_dir.parent.rmdir()
    write_json(snakemake.output.cut, {"rung": rung, "epochs": upto, "scores": {str(k): v for k, v in scores.items()},
                                      "survivors": list(kept)})
    console_line(f"PiFi: race {where}, cut {rung}: layers {', '.join(map(str, kept))} of {len(scores)} go on")
else:
    scores = rung_scores(histories, p.epochs)
    layer = winner(scores)
    first = read_json(snakemake.input.cut1)
    cost, sweep = race_cost(len(first["scores"]), len(p.seeds), p.epochs, settings)
    write_json(snakemake.output.race, {"dataset": wc.dataset, "slm": wc.slm, "llm": wc.llm, "layer": layer,
                                       "scores": {str(k): v for k, v in scores.items()},
                                       "candidates": sorted(int(k) for k in first["scores"]),
                                       "cost_runs": cost / p.epochs, "sweep_runs": sweep / p.epochs,
                                       "cost_fraction": cost / sweep, "eta": settings.eta,
                                       "first_epochs": settings.first_epochs})
    console_line(f"PiFi: race {where}: layer {layer} wins, at {cost / sweep:.0%} of the sweep's training")
