"""Successive halving replayed over a finished layer sweep: rungs, survivors, winner and cost, by hand."""

from __future__ import annotations

import json
import math

import pytest

from pifi.artifacts import ArtifactError, write_json
from pifi.race import (
    RaceResult,
    RaceSettings,
    Rung,
    histories_from_files,
    keep_count,
    race_cost,
    replay,
    survivors,
)


def _same_on_seeds(curves: dict[int, list[float]], seeds) -> dict[int, dict[int, list[float]]]:
    return {layer: {seed: list(curve) for seed in seeds} for layer, curve in curves.items()}


# --- test 1: a clear winner over 9 layers x 3 seeds x 3 epochs ----------------------------------

EPOCH1 = {0: 0.50, 1: 0.52, 2: 0.70, 3: 0.55, 4: 0.56, 5: 0.72, 6: 0.54, 7: 0.60, 8: 0.80}


def _clear_sweep() -> dict[int, dict[int, list[float]]]:
    # Seeds given out of order: the race seed is the smallest (11), not the first key.
    return {layer: {seed: [a - shift, a + 0.05 - shift, a + 0.10 - shift]
                    for seed, shift in ((33, 0.02), (11, 0.0), (22, 0.01))}
            for layer, a in EPOCH1.items()}


def test_clear_winner_rungs_and_cost():
    result = replay(_clear_sweep())
    assert result.layer == 8
    first, second, final = result.rungs
    assert first.epochs == 1 and first.seeds == (11,)
    assert first.scores == pytest.approx(EPOCH1)            # every layer, the epoch-1 score on seed 11
    assert first.survivors == (2, 5, 8)                      # the 3 best epoch-1 layers (0.70, 0.72, 0.80)
    assert second.epochs == 3 and second.seeds == (11,)
    assert second.scores == pytest.approx({2: 0.80, 5: 0.82, 8: 0.90})
    assert second.survivors == (8,)
    assert final.epochs == 3 and final.seeds == (11, 22, 33)
    assert final.scores == pytest.approx({8: (0.90 + 0.89 + 0.88) / 3})
    assert final.survivors == (8,)
    assert (result.cost_epochs, result.sweep_epochs) == (9 * 1 + 3 * 2 + 1 * 2 * 3, 81) == (21, 81)
    assert result.cost_fraction == pytest.approx(21 / 81)
    assert result.cost_runs == pytest.approx(7.0) and result.sweep_runs == pytest.approx(27.0)


def test_to_dict_is_json_with_string_score_keys():
    as_dict = json.loads(json.dumps(replay(_clear_sweep()).to_dict()))
    assert as_dict["layer"] == 8
    assert as_dict["cost_fraction"] == 0.2593                # 21 / 81 = 0.259259..., rounded to 4
    assert as_dict["cost_runs"] == pytest.approx(7.0) and as_dict["sweep_runs"] == pytest.approx(27.0)
    assert [r["survivors"] for r in as_dict["rungs"]] == [[2, 5, 8], [8], [8]]
    assert as_dict["rungs"][1]["scores"] == pytest.approx({"2": 0.80, "5": 0.82, "8": 0.90})
    assert as_dict["rungs"][2]["seeds"] == [11, 22, 33]


# --- test 2: a late bloomer survives rung 0 and wins; the epoch-1 leader falls at rung 1 --------

def test_late_bloomer_wins_and_early_leader_is_eliminated_at_rung_1():
    curves = {layer: [0.50, 0.55, 0.60] for layer in range(9)}
    curves[3] = [0.80, 0.79, 0.78]   # best at epoch 1, flat after: rung 1 score 0.80
    curves[1] = [0.75, 0.76, 0.77]   # 2nd at epoch 1
    curves[6] = [0.70, 0.82, 0.90]   # 3rd at epoch 1, best at epoch 3: rung 1 score 0.90
    curves[0] = [0.60, 0.70, 0.95]   # best of all at epoch 3, but 4th at epoch 1: out at rung 0
    result = replay(_same_on_seeds(curves, (0, 1)))
    assert result.rungs[0].survivors == (1, 3, 6)
    assert result.rungs[1].scores == pytest.approx({1: 0.77, 3: 0.80, 6: 0.90})
    assert result.rungs[1].survivors == (6,)
    assert result.layer == 6
    assert (result.cost_epochs, result.sweep_epochs) == (9 + 3 * 2 + 1 * 1 * 3, 54)


# --- test 3: the final rung averages over every seed ---------------------------------------------

def test_final_rung_uses_the_mean_over_all_seeds():
    # K = 12, eta = 3: 12 -> 4 survive rung 0 -> 2 survive rung 1 -> winner over 3 seeds.
    curves = {layer: [0.50 + 0.01 * layer] * 3 for layer in range(12)}   # epoch-1 scores <= 0.61
    curves[1] = [0.77, 0.78, 0.79]
    curves[7] = [0.76, 0.77, 0.80]
    histories = _same_on_seeds(curves, (0, 1, 2))
    histories[4] = {0: [0.80, 0.85, 0.90], 1: [0.70, 0.72, 0.74], 2: [0.70, 0.72, 0.74]}   # A
    histories[9] = {0: [0.78, 0.84, 0.88], 1: [0.85, 0.86, 0.87], 2: [0.85, 0.86, 0.87]}   # B
    result = replay(histories)
    assert result.rungs[0].survivors == (1, 4, 7, 9)
    assert result.rungs[1].scores == pytest.approx({1: 0.79, 4: 0.90, 7: 0.80, 9: 0.88})   # A ahead on seed 0
    assert result.rungs[1].survivors == (4, 9)
    assert result.rungs[2].seeds == (0, 1, 2)
    assert result.rungs[2].scores == pytest.approx({4: (0.90 + 0.74 + 0.74) / 3, 9: (0.88 + 0.87 + 0.87) / 3})
    assert result.layer == 9                                  # B: 0.8733 against A's 0.7933
    assert (result.cost_epochs, result.sweep_epochs) == (12 * 1 + 4 * 2 + 2 * 2 * 3, 108) == (32, 108)


# --- test 4: a run's score is its best epoch so far, not its last --------------------------------

def test_rung_scores_are_best_so_far():
    # K = 4, eta = 2: 4 -> 2 -> 1; one seed, so the final rung trains nothing.
    curves = {0: [0.60, 0.90, 0.70],   # drops after epoch 2: keeps 0.90 at rung 1
              1: [0.61, 0.65, 0.80],   # would win on the last epoch
              2: [0.50, 0.50, 0.50], 3: [0.40, 0.40, 0.40]}
    result = replay(_same_on_seeds(curves, (5,)), RaceSettings(eta=2))
    assert result.rungs[0].survivors == (0, 1)
    assert result.rungs[1].scores == pytest.approx({0: 0.90, 1: 0.80})
    assert result.layer == 0
    assert result.rungs[2].scores == pytest.approx({0: 0.90}) and result.rungs[2].seeds == (5,)
    assert (result.cost_epochs, result.sweep_epochs) == (4 * 1 + 2 * 2 + 0, 12)
    # With two first epochs, rung 0 already sees layer 0's 0.90 (not its epoch-2-only value twice over).
    two = replay(_same_on_seeds(curves, (5,)), RaceSettings(eta=2, first_epochs=2))
    assert two.rungs[0].epochs == 2 and two.rungs[0].scores == pytest.approx({0: 0.90, 1: 0.65, 2: 0.50, 3: 0.40})
    assert two.cost_epochs == 4 * 2 + 2 * 1


def test_nan_epochs_are_never_a_runs_best():
    # As in training (a NaN accuracy is never "better"): NaN epochs are skipped; all-NaN so far ranks last.
    curves = {0: [math.nan, 0.80, 0.85], 1: [0.50, 0.55, 0.65], 2: [math.nan, math.nan, 0.99]}
    result = replay(_same_on_seeds(curves, (0,)), RaceSettings(eta=2, first_epochs=2))
    assert result.rungs[0].scores[0] == pytest.approx(0.80) and math.isnan(result.rungs[0].scores[2])
    assert result.rungs[0].survivors == (0, 1)
    assert result.rungs[1].scores == pytest.approx({0: 0.85, 1: 0.65})
    assert result.layer == 0


# --- test 5: ties go to the lower layer -----------------------------------------------------------

def test_survivors_keep_the_best_with_ties_to_the_lower_layer():
    scores = {4: 0.7, 1: 0.5, 3: 0.7, 2: 0.7, 9: 0.9}
    assert survivors(scores, 1) == (9,)
    assert survivors(scores, 2) == (2, 9)
    assert survivors(scores, 3) == (2, 3, 9)
    assert survivors(scores, 10) == (1, 2, 3, 4, 9)
    assert survivors({0: math.nan, 1: 0.1, 2: 0.2}, 2) == (1, 2)   # NaN ranks last
    with pytest.raises(ValueError, match="at least one"):
        survivors(scores, 0)


def test_final_tie_goes_to_the_lower_layer():
    # K = 8, eta = 2: 8 -> 4 -> 2. Layer 5 leads on the race seed; layers 2 and 5 tie on the mean.
    curves = {layer: [0.50] * 3 for layer in range(8)}
    curves[0] = curves[7] = [0.70] * 3
    histories = _same_on_seeds(curves, (0, 1))
    histories[2] = {0: [0.80] * 3, 1: [0.90] * 3}
    histories[5] = {0: [0.90] * 3, 1: [0.80] * 3}
    result = replay(histories, RaceSettings(eta=2))
    assert result.rungs[0].survivors == (0, 2, 5, 7)
    assert result.rungs[1].survivors == (2, 5)
    assert result.rungs[2].scores[2] == result.rungs[2].scores[5]
    assert result.layer == 2


def test_rung_0_ties_keep_the_lower_layers():
    curves = {layer: [0.60, 0.60, 0.60] for layer in range(6)}   # all tied: keep ceil(6/3) = 2 lowest
    result = replay(_same_on_seeds(curves, (0,)))
    assert result.rungs[0].survivors == (0, 1)
    assert result.rungs[1].survivors == (0,) and result.layer == 0


# --- test 6: keep counts and the up-front cost ----------------------------------------------------

def test_keep_count():
    assert [keep_count(n, 3) for n in (1, 2, 3, 4, 8, 9, 10, 24)] == [1, 1, 1, 2, 3, 3, 4, 8]
    assert [keep_count(n, 2) for n in (1, 2, 3, 8)] == [1, 1, 2, 4]
    with pytest.raises(ValueError):
        keep_count(0, 3)


def test_race_cost_by_hand():
    assert race_cost(24, 5, 3) == (24 * 1 + 8 * 2 + 3 * 4 * 3, 360) == (76, 360)
    assert race_cost(9, 3, 3) == (21, 81)
    assert race_cost(1, 4, 3) == (12, 12)                              # one layer: the race is the sweep
    # first_epochs >= E: rung 0 trains all E epochs, rung 1 trains nothing: 9*3 + 0 + 1*2*3.
    assert race_cost(9, 3, 3, RaceSettings(first_epochs=3)) == (33, 81)
    assert race_cost(9, 3, 3, RaceSettings(first_epochs=5)) == (33, 81)
    assert race_cost(8, 2, 3, RaceSettings(eta=2, first_epochs=2)) == (8 * 2 + 4 * 1 + 2 * 1 * 3, 48)


def test_replay_cost_matches_race_cost_when_rungs_merge():
    result = replay(_clear_sweep(), RaceSettings(first_epochs=4))
    assert result.rungs[0].epochs == 3
    assert result.rungs[0].scores == pytest.approx({layer: a + 0.10 for layer, a in EPOCH1.items()})
    assert result.rungs[1].epochs == 3 and result.rungs[1].survivors == (8,)
    assert result.rungs[1].scores == {layer: result.rungs[0].scores[layer] for layer in (2, 5, 8)}
    assert result.rungs[0].survivors == (2, 5, 8) and result.layer == 8
    assert (result.cost_epochs, result.sweep_epochs) == race_cost(9, 3, 3, RaceSettings(first_epochs=4)) == (33, 81)


# --- test 7: errors name the problem -------------------------------------------------------------

def test_settings_are_validated():
    with pytest.raises(ValueError, match="eta"):
        RaceSettings(eta=1)
    with pytest.raises(ValueError, match="first_epochs"):
        RaceSettings(first_epochs=0)


def test_incomplete_sweeps_are_refused():
    with pytest.raises(ValueError, match="at least one swept layer"):
        replay({})
    with pytest.raises(ValueError, match="layer 1 has no run for seed 2"):
        replay({0: {1: [0.5], 2: [0.6]}, 1: {1: [0.5]}})
    with pytest.raises(ValueError, match="layer 1, seed 2 has 2 epochs but layer 0, seed 1 has 3"):
        replay({0: {1: [0.5] * 3, 2: [0.5] * 3}, 1: {1: [0.5] * 3, 2: [0.5] * 2}})
    with pytest.raises(ValueError, match="layer 0, seed 1: empty validation history"):
        replay({0: {1: []}})


# --- test 8: histories read back from history.json files -----------------------------------------

def test_histories_from_files_round_trip(tmp_path):
    sweep = _clear_sweep()
    files = {}
    for layer, runs in sweep.items():
        for seed, accuracies in runs.items():
            path = tmp_path / f"layer{layer}" / f"seed{seed}" / "history.json"
            path.parent.mkdir(parents=True)
            epochs = [{"epoch": e, "train_loss": 0.1, "validation_accuracy": a} for e, a in enumerate(accuracies, 1)]
            best = max(range(len(accuracies)), key=accuracies.__getitem__)
            write_json(path, {"best_epoch": best + 1, "best_validation_accuracy": accuracies[best], "epochs": epochs})
            files[(layer, seed)] = path if seed != 22 else str(path)
    histories = histories_from_files(files)
    assert histories == sweep
    assert replay(histories) == replay(sweep)

    # Reads are verified: a changed accuracy is refused, not raced on.
    target = files[(8, 11)]
    target.write_text(target.read_text().replace("0.9", "0.1", 1))
    with pytest.raises(ArtifactError):
        histories_from_files(files)


def test_histories_from_files_refuses_out_of_order_epochs(tmp_path):
    path = tmp_path / "history.json"
    write_json(path, {"best_epoch": 1, "best_validation_accuracy": 0.6,
                      "epochs": [{"epoch": 2, "validation_accuracy": 0.5}, {"epoch": 1, "validation_accuracy": 0.6}]})
    with pytest.raises(ValueError, match="epochs 1, 2"):
        histories_from_files({(0, 0): path})


def test_result_types_are_frozen():
    result = replay(_clear_sweep())
    assert isinstance(result, RaceResult) and all(isinstance(r, Rung) for r in result.rungs)
    with pytest.raises(AttributeError):
        result.layer = 0  # type: ignore[misc]
