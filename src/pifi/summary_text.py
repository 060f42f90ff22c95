"""The summary in words: summary.md, and the verdict lines, table cells and notes that the HTML
report's first page (pifi.report_page) shares with it. The tables themselves: pifi.summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from pifi.summary import GROUP


STABLE_WIN_RATE = 0.7  # a choice that wins fewer resampled selections than this is called unstable
NOT_CONVERGED = "no¹"  # the mark ties the cell to convergence_note()
SWEEP_HEADERS = ["oracle", "regret (pts)", "interval", "tied", "rank", "ρ", "τ", "top 3"]
PREFERRED_COMPARISONS = (("pifi_ilm", "base"), ("pifi_ilm", "pifi_last"))

Code = Callable[[str], str]  # how a format marks code: `x` in Markdown, ``x`` in reStructuredText
Key = tuple[str, str, str]


def markdown_code(text: str) -> str:
    return f"`{text}`"


def is_missing(value: Any) -> bool:
    """None or NaN, as the in-memory tables and the CSVs read back both spell a missing value."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def words(items: Sequence[Any]) -> str:
    """'a', 'a and b', 'a, b and c': a list in words, not in Python's brackets."""
    items = [str(item) for item in items]
    if not items:
        return ""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def signed(value: float, decimals: int = 1) -> str:
    """A signed number as people read it, e.g. 7.5 -> '+7.5'; never '-0.0'."""
    return f"{round(float(value), decimals) + 0.0:+.{decimals}f}"  # + 0.0 turns a rounded -0.0 into +0.0


def points(value: float, decimals: int = 1) -> str:
    """A share as signed points, e.g. 0.075 -> '+7.5'; never '-0.0'."""
    return signed(100 * float(value), decimals)


def difference_text(difference: float, low: float, high: float, decimals: int = 1) -> str:
    return f"{points(difference, decimals)} [{points(low, decimals)}, {points(high, decimals)}]"


def _layer_text(value: Any) -> str:
    return "-" if is_missing(value) or value == "-" else str(int(float(value)))


# Selectors: which columns mean anything, and the cells people read.

def has_sweep(selectors: pd.DataFrame) -> bool:
    return any(not is_missing(v) for v in selectors["oracle_layer"])


def unswept_groups(selectors: pd.DataFrame) -> list[Key]:
    """The dataset x SLM x LLM groups whose selectors have no oracle (no swept layers)."""
    swept = selectors["oracle_layer"].map(lambda v: not is_missing(v))
    return sorted(key for key, rows in swept.groupby([selectors[c] for c in GROUP]) if not rows.any())


def no_sweep_sentence(selectors: pd.DataFrame, code: Code = markdown_code, text: Code = str) -> str | None:
    """Why the sweep's columns are empty; None when every group has a sweep."""
    missing = unswept_groups(selectors)
    if not missing:
        return None
    need = (f"Oracle, regret, rank, ρ, τ and top 3 need the layer sweep ({code('pifi_sweep')} in "
            f"{code('run.methods')}); ")
    if not has_sweep(selectors):
        return need + "this run has none, so only each selector's choice and stability are shown."
    names = words([text(" / ".join(map(str, key))) for key in missing])
    verb = "has" if len(missing) == 1 else "have"
    return need + f"{names} {verb} none, so only the choice and stability are shown there."


def converged_cell(value: Any) -> str:
    """yes, no¹ (see convergence_note) or - for a selector without a probe."""
    return "-" if is_missing(value) else ("yes" if value else NOT_CONVERGED)


def any_not_converged(selectors: pd.DataFrame) -> bool:
    return any(not is_missing(v) and not v for v in selectors["converged"])


def convergence_note(code: Code = markdown_code) -> str:
    return ("¹ no = the selector's logistic-regression probe stopped at its iteration limit on at least one layer "
            "(scikit-learn's ConvergenceWarning), so its scores there may be less reliable. The limit is the "
            f"constant {code('PROBE_MAX_ITER')} in {code('src/pifi/selectors/_probes.py')}, every probe's; no config "
            "key sets it.")


def is_unstable(win_rate: Any) -> bool:
    return not is_missing(win_rate) and float(win_rate) < STABLE_WIN_RATE


def win_rate_cell(win_rate: Any) -> str:
    if is_missing(win_rate):
        return "-"
    return f"{float(win_rate):.0%}" + (" (unstable)" if is_unstable(win_rate) else "")


def unstable_note(code: Code = markdown_code) -> str:
    return (f"(unstable) = the chosen layer won fewer than {STABLE_WIN_RATE:.0%} of the resampled selections "
            f"({code('selection.stability_resamples')} subsets of {code('selection.stability_fraction')} of the "
            "samples each), so other samples may choose another layer; more samples "
            f"({code('selection.n_samples')}) usually steady the choice.")


def selector_table(selectors: pd.DataFrame, *, decimals: int = 2) -> tuple[list[str], list[list[str]], list[bool]]:
    """Headers, cells and which rows drive pifi_ilm; the sweep's columns only where some group has a sweep."""
    sweep = has_sweep(selectors)
    headers = ["dataset", "SLM", "LLM", "selector", "layer", *(SWEEP_HEADERS if sweep else []),
               "win rate", "modal", "probes converged"]
    rows = []
    for r in selectors.to_dict("records"):
        cells = [r["dataset"], r["slm"], r["llm"], r["selector"], _layer_text(r["layer"])]
        if sweep:
            cells += _sweep_cells(r, decimals)
        cells += [win_rate_cell(r["win_rate"]), _layer_text(r["modal_layer"]), converged_cell(r["converged"])]
        rows.append([str(c) for c in cells])
    return headers, rows, [bool(v) for v in selectors["drives_pifi_ilm"]]


def _sweep_cells(r: Mapping[str, Any], decimals: int) -> list[str]:
    if is_missing(r["regret"]):  # the chosen layer was not trained
        regret = interval = "-"
    else:
        star = "*" if not is_missing(r["regret_significant"]) and bool(r["regret_significant"]) else ""
        regret = points(r["regret"], decimals) + star
        interval = f"{points(r['regret_low'], decimals)} to {points(r['regret_high'], decimals)}"
    rank = "-" if is_missing(r["rank"]) else f"{int(r['rank'])}/{int(r['n_swept'])}"
    return [_layer_text(r["oracle_layer"]), regret, interval, _yes_no(r["tied"]), rank,
            _maybe(r["spearman_rho"], "{:+.2f}"),
            _maybe(r["kendall_tau"], "{:+.2f}"), _yes_no(r["oracle_in_top3"])]


# Verdicts: one line per dataset x SLM x LLM, in words.

def verdict_intro(confidence: float, code: Code = markdown_code) -> str:
    return (f"Per dataset, SLM and LLM: the layer {code('pifi_ilm')} plugs in, and whether it really differs from "
            f"the alternatives (test accuracy difference in points with its {100 * confidence:.0f}% paired "
            "bootstrap interval; significant only when the interval excludes 0).")


def verdicts(tables: Mapping[str, pd.DataFrame], *, code: Code = markdown_code, text: Code = str) -> list[str]:
    """One line per dataset x SLM x LLM: the chosen layer, is it better, its regret, is it stable.

    ``text`` escapes the names (datasets, models, selectors) for the target format.
    """
    summary, comparisons, selectors = tables["summary"], tables["comparisons"], tables["selectors"]
    checks = tables.get("data_checks")
    return [_verdict(key, _rows(summary, key), _rows(comparisons, key), _driver(selectors, key), code, text)
            + _overlap_sentence(checks, key[0], code)
            for key in _groups(summary, selectors)]


def _overlap_sentence(checks: pd.DataFrame | None, dataset: str, code: Code) -> str:
    """A warning where test rows share their text with train or validation (leakage), or were dropped for it."""
    if checks is None or not len(checks) or dataset not in set(checks["dataset"]):
        return ""
    r = checks[checks["dataset"] == dataset].iloc[0]
    setting = code(f"split_overlap: {r['split_overlap']}")
    if int(r["test_rows_dropped"]):
        return (f" Warning: {int(r['test_rows_dropped'])} test row(s) shared their text with train or validation "
                f"and were dropped ({setting}).")
    if not int(r["train_test"]) and not int(r["validation_test"]):
        return ""
    return (f" Warning: test rows share their text with train ({int(r['train_test'])}) or validation "
            f"({int(r['validation_test'])}) of {int(r['test_rows'])} ({setting}; "
            f"{code(f'datasets.{dataset}.split_overlap: drop_test')} drops them): the test score partly measures "
            "memory.")


def _groups(*tables: pd.DataFrame) -> list[Key]:
    keys = [tuple(k) for table in tables if len(table) for k in table[GROUP].itertuples(index=False)]
    return list(dict.fromkeys(keys))


def _rows(table: pd.DataFrame, key: Key) -> list[dict]:
    if not len(table):
        return []
    match = (table["dataset"] == key[0]) & (table["slm"] == key[1]) & (table["llm"] == key[2])
    return table[match].to_dict("records")


def _driver(selectors: pd.DataFrame, key: Key) -> dict | None:
    return next((r for r in _rows(selectors, key) if bool(r["drives_pifi_ilm"])), None)


def _verdict(key: Key, summary: list[dict], comparisons: list[dict], driver: dict | None, code: Code,
             text: Code) -> str:
    dataset, slm, llm = (text(str(name)) for name in key)
    methods = {r["method"]: r for r in summary}
    if key[2] == "-":  # base alone: no LLM in the run
        base = methods.get("base")
        accuracy = "" if base is None else f", test accuracy {100 * base['accuracy_mean']:.1f}%"
        return f"**{dataset}** ({slm} alone): only the SLM was trained{accuracy}."
    selector = None if driver is None else text(str(driver["selector"]))
    parts = [_choice_sentence(methods.get("pifi_ilm"), driver, selector, code),
             _comparison_sentence(comparisons, code)]
    if driver is not None:
        parts += [_sweep_sentence(driver), _stability_sentence(driver)]
    said = " ".join(p for p in parts if p) or "no comparison could be made."
    return f"**{dataset}** ({slm} + {llm}): {said}"


def _choice_sentence(ilm: Mapping | None, driver: Mapping | None, selector: str | None, code: Code) -> str:
    by = "" if driver is None else f", chosen by {selector}"
    if ilm is not None:
        return (f"{code('pifi_ilm')} plugs in layer {_layer_text(ilm['llm_layer'])}{by} "
                f"(test accuracy {100 * ilm['accuracy_mean']:.1f}%).")
    if driver is not None:
        return (f"{selector} chooses layer {_layer_text(driver['layer'])} ({code('pifi_ilm')} is not "
                "among the methods).")
    return ""


def _comparison_sentence(comparisons: list[dict], code: Code) -> str:
    by_pair = {(r["a"], r["b"]): r for r in comparisons}
    pairs = [p for p in PREFERRED_COMPARISONS if p in by_pair] or [p for p in [("pifi_last", "base")] if p in by_pair]
    said = [f"{code(a)} vs {code(b)}: {_judgement(by_pair[(a, b)])} "
            f"({difference_text(*(by_pair[(a, b)][c] for c in ('difference', 'low', 'high')))} points)"
            for a, b in pairs]
    return "; ".join(said) + "." if said else ""


def _judgement(row: Mapping) -> str:
    if not bool(row["significant"]):
        return "no significant difference"
    return "better" if row["difference"] > 0 else "worse"


def _sweep_sentence(driver: Mapping) -> str:
    if is_missing(driver["oracle_layer"]):
        return ""
    oracle, layer = int(driver["oracle_layer"]), int(driver["layer"])
    swept = f"best validation accuracy of {int(driver['n_swept'])} swept layers"
    tied = _tied_words(driver)
    if layer == oracle:
        return f"It is the oracle layer ({swept}).{tied}"
    if is_missing(driver["regret"]):
        return f"The oracle is layer {oracle} ({swept}); layer {layer} was not trained, so it has no regret."
    regret = difference_text(driver["regret"], driver["regret_low"], driver["regret_high"])
    rank = ("" if is_missing(driver["rank"])
            else f"the chosen layer ranks {int(driver['rank'])} of {int(driver['n_swept'])}; ")
    if not bool(driver["regret_significant"]):
        judged = "not significant"
    elif driver["regret"] > 0:
        judged = "significant: the chosen layer is really worse on test"
    else:
        judged = "significant: the chosen layer does better on test than the oracle"
    return f"The oracle is layer {oracle} ({swept}); {rank}regret {regret} points, {judged}.{tied}"


def _tied_words(driver: Mapping) -> str:
    """" Tied with the best on validation: layers 0, 4 and 8; the chosen layer is one of them." (or is not)"""
    if is_missing(driver.get("tied_layers")):
        return ""
    layers = str(driver["tied_layers"]).split()
    if is_missing(driver.get("tied")):
        verdict = ""
    elif not bool(driver["tied"]):
        verdict = "; the chosen layer is not"
    elif str(int(driver["layer"])) in layers:
        verdict = "; the chosen layer is one of them"
    else:  # trained beside the sweep (a selector's layer outside it): judged against the oracle all the same
        verdict = f"; the chosen layer {int(driver['layer'])}, outside the sweep, is not worse than the best either"
    return f" Tied with the best on validation: layer{'s' if len(layers) > 1 else ''} {words(layers)}{verdict}."


def _stability_sentence(driver: Mapping) -> str:
    if not is_unstable(driver["win_rate"]):
        return ""
    return (f"Unstable: layer {_layer_text(driver['layer'])} won only {float(driver['win_rate']):.0%} of the "
            "resampled selections, so other samples may choose another layer.")


# The Markdown itself.

def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _yes_no(value: Any) -> str:
    return "-" if is_missing(value) else ("yes" if value else "no")


def _maybe(value: Any, fmt: str = "{}") -> str:
    return "-" if is_missing(value) else fmt.format(value)


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return [f"| {' | '.join(headers)} |", "|" + "---|" * len(headers),
            *(f"| {' | '.join(row)} |" for row in rows)]


def markdown_report(tables: Mapping[str, pd.DataFrame], *, confidence: float = 0.95) -> str:
    level = f"{100 * confidence:.0f}%"
    lines = ["# PiFi-ILM summary", ""]
    found = verdicts(tables)
    if found:
        lines += ["## Verdict", "", verdict_intro(confidence), "", *(f"- {line}" for line in found), ""]
    oracle = (" `pifi_oracle` is the swept layer with the best *validation* accuracy."
              if (tables["summary"]["method"] == "pifi_oracle").any() else "")
    oracle += (" `pifi_race` is the layer successive halving over the swept layers found; runs = its training "
               "cost in whole runs, next to the sweep's." if (tables["summary"]["method"] == "pifi_race").any() else "")
    lines += ["## Methods", "",
              f"Test-split metrics in %, mean ± std over seeds, with the {level} bootstrap interval of the accuracy "
              "(test rows and seeds resampled together). `pifi_last` plugs the LLM's last decoder layer (the paper's "
              f"default), `pifi_ilm` the layer chosen by the selector.{oracle}", "",
              "| dataset | SLM | LLM | method | layer | seeds | accuracy | interval | macro-F1 | MCC | trainable | total "
              "| runs |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in tables["summary"].itertuples():
        lines.append(f"| {r.dataset} | {r.slm} | {r.llm} | {r.method} | {r.llm_layer} | {r.n_seeds} | "
                     f"{_pct(r.accuracy_mean)} ± {_pct(r.accuracy_std)} | {_pct(r.accuracy_low)}–{_pct(r.accuracy_high)} | "
                     f"{_pct(r.macro_f1_mean)} ± {_pct(r.macro_f1_std)} | {_pct(r.mcc_mean)} ± {_pct(r.mcc_std)} | "
                     f"{r.trainable_params:,} | {r.total_params:,} | {r.training_runs:g} |")
    if len(tables["comparisons"]):
        lines += ["", "## Is the difference real?", "",
                  f"Paired bootstrap over the same test rows and seeds; a winner is named only where the {level} "
                  "interval of the difference excludes 0.", "",
                  "| dataset | SLM | LLM | comparison | verdict |", "|---|---|---|---|---|"]
        for r in tables["comparisons"].itertuples():
            marker = " **" if r.significant else " "
            lines.append(f"| {r.dataset} | {r.slm} | {r.llm} | {r.a} − {r.b} |{marker}{r.verdict}{marker.strip()} |")
    if len(tables["selectors"]):
        lines += ["", "## Which selector to trust", "", selector_intro(tables["selectors"], level), ""]
        lines += _markdown_selectors(tables["selectors"])
    if len(tables["layers"]):
        lines += ["", "## PiFi per layer", "",
                  f"Mean over seeds; validation with a t-interval over seeds, test with the {level} bootstrap interval.",
                  " Tied = the layer's validation accuracy is not significantly below the oracle's (paired "
                  "bootstrap over validation rows and seeds).",
                  "", "| dataset | SLM | LLM | layer | swept | seeds | validation | test | test interval | tied |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in tables["layers"].itertuples():
            lines.append(f"| {r.dataset} | {r.slm} | {r.llm} | {r.layer} | {'yes' if r.swept else 'no'} | {r.n_seeds} | "
                         f"{_pct(r.val_mean)} | {_pct(r.test_mean)} | {_pct(r.test_low)}–{_pct(r.test_high)} | "
                         f"{_yes_no(r.tied)} |")
    return "\n".join(lines) + "\n"


def selector_intro(selectors: pd.DataFrame, level: str) -> str:
    stability = ("Win rate = share of resampled selections the chosen layer also won; modal = the layer that won "
                 "most often.")
    if not has_sweep(selectors):
        return stability
    return ("Regret = test accuracy of the oracle layer − test accuracy of the selector's layer, in points, "
            f"with its {level} paired interval (* = the interval excludes 0: a real difference; above 0 the "
            "selector's layer is worse). Rank = the chosen layer's place among the swept layers by validation "
            "accuracy. "
            "Tied = the selector's layer is tied with the best: its validation accuracy is not significantly "
            "below the oracle's (paired bootstrap over validation rows and seeds, the rows the oracle was chosen on). "
            "ρ and τ = Spearman and Kendall correlations of the selector's scores with the sweep's validation "
            "accuracy; top 3 = the oracle is among the selector's 3 best-scored swept layers. " + stability)


def _markdown_selectors(selectors: pd.DataFrame) -> list[str]:
    headers, rows, drives = selector_table(selectors, decimals=2)
    rows = [[f"**{c}**" if i == 3 and bold else c for i, c in enumerate(row)] for row, bold in zip(rows, drives)]
    lines = _md_table(headers, rows)
    notes = [no_sweep_sentence(selectors), "The selector in bold drives `pifi_ilm`.",
             unstable_note() if any(is_unstable(v) for v in selectors["win_rate"]) else None,
             convergence_note() if any_not_converged(selectors) else None]
    for note in notes:
        if note:
            lines += ["", note]
    return lines
