"""The HTML report's first page: which layer, and is it real?

``snakemake --report`` shows the workflow description (the Snakefile's ``report:``) on its first page.
Snakemake passes that reStructuredText through Jinja, then docutils, so the page written here holds no
Jinja delimiters and parses without docutils warnings. It reads the summary tables (pifi.summary) and
says, in this order: what ran, the verdict per dataset x SLM x LLM, then the tables behind it, rounded
for people (the CSVs in the report's Tables category keep full precision).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pandas as pd

from pifi.summary_text import (
    any_not_converged, convergence_note, difference_text, is_unstable, no_sweep_sentence,
    selector_intro, selector_table, unstable_note, verdict_intro, verdicts, words,
)

TITLE = "PiFi-ILM: which layer, and is it real?"
JINJA_OPENERS = ("{{", "{%", "{#")


def rst_code(text: str) -> str:
    return f"``{text}``"


def report_page(tables: Mapping[str, pd.DataFrame], *, run: Mapping, selection: Mapping,
                confidence: float = 0.95) -> str:
    """The report's first page (reStructuredText) from the summary tables and the config's run and selection."""
    level = f"{100 * confidence:.0f}%"
    blocks = [_heading(TITLE, "="), _what_ran(tables, run, selection)]
    found = verdicts(tables, code=rst_code, text=_escape)
    if found:
        blocks += [_heading("Verdict", "-"), verdict_intro(confidence, code=rst_code),
                   "\n".join(f"- {line}" for line in found)]
    blocks += _methods_section(tables["summary"], level)
    if len(tables["comparisons"]):
        blocks += _comparisons_section(tables["comparisons"], level)
    if len(tables["selectors"]):
        blocks += _selectors_section(tables["selectors"], level)
    blocks += [_heading("Figures and tables", "-"), _closing(level)]
    return _jinja_safe("\n\n".join(blocks)) + "\n"


# --- what ran -------------------------------------------------------------------------------------

def _what_ran(tables: Mapping[str, pd.DataFrame], run: Mapping, selection: Mapping) -> str:
    methods = list(run["methods"])
    datasets, seeds = list(run["datasets"]), list(run["seeds"])
    on = f"on {_count(len(datasets), 'dataset')} ({_escape(words(datasets))}), {_count(len(seeds), 'seed')} each."
    sentences = [f"{_models(run, plugged=methods != ['base'])} {on}",
                 "Methods: " + words([_method_words(m, tables, selection) for m in methods]) + "."]
    if not len(tables["selectors"]):  # no layer was selected (e.g. base alone)
        return " ".join(sentences)
    sentences.append(_selectors_words(selection))
    if "pifi_sweep" in methods:
        sentences.append("The swept layer with the best validation accuracy is the oracle; each selector is judged "
                         "by its regret against it (oracle minus chosen layer, test accuracy).")
    else:
        sentences.append("No layer sweep was run, so the selectors are compared by their choices only.")
    return " ".join(sentences)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _models(run: Mapping, *, plugged: bool) -> str:
    slms, llms = list(run["slms"]), list(run["llms"])
    subject = f"The SLM{'' if len(slms) == 1 else 's'} {_escape(words(slms))}"
    if not plugged:
        return f"{subject} alone"
    each = "" if len(slms) == 1 else ", each"
    of = f"the LLM {_escape(words(llms))}" if len(llms) == 1 else f"each of the LLMs {_escape(words(llms))}"
    return f"{subject}{each} with one frozen decoder layer of {of}"


def _method_words(method: str, tables: Mapping[str, pd.DataFrame], selection: Mapping) -> str:
    described = {
        "base": "the SLM alone",
        "pifi_last": "the LLM's last layer",
        "pifi_ilm": (f"the layer chosen by {_escape(selection['selector'])} from {selection['n_samples']} "
                     f"{_escape(selection['split'])} rows"),
        "pifi_sweep": f"each of {_swept_count(tables['layers'])} swept layers",
    }
    return f"{described.get(method, 'PiFi')} ({rst_code(method)})"


def _swept_count(layers: pd.DataFrame) -> str:
    """The number of swept layers with runs, per dataset x SLM x LLM (a range where they differ)."""
    swept = layers[layers["swept"].astype(bool)] if len(layers) else layers
    counts = sorted(set(swept.groupby(["dataset", "slm", "llm"]).size())) if len(swept) else []
    if not counts:
        return "the"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"


def _selectors_words(selection: Mapping) -> str:
    names = list(selection.get("selectors") or [selection["selector"]])
    listed = words([f"{_escape(n)} (which drives {rst_code('pifi_ilm')})" if n == selection["selector"]
                    else _escape(n) for n in names])
    return f"The {_count(len(names), 'selector')} compared: {listed}."


# --- tables ---------------------------------------------------------------------------------------

def _methods_section(summary: pd.DataFrame, level: str) -> list[str]:
    headers = ["dataset", "SLM", "LLM", "method", "layer", "seeds", "accuracy (%)", f"{level} interval",
               "macro-F1 (%)", "MCC (%)", "training runs"]
    rows = [[r["dataset"], r["slm"], r["llm"], r["method"], r["llm_layer"], r["n_seeds"],
             _mean_std(r["accuracy_mean"], r["accuracy_std"]), _interval(r["accuracy_low"], r["accuracy_high"]),
             _mean_std(r["macro_f1_mean"], r["macro_f1_std"]), _mean_std(r["mcc_mean"], r["mcc_std"]),
             f"{r['training_runs']:g}"]
            for r in summary.to_dict("records")]
    intro = (f"Test accuracy, macro-F1 and MCC in %, mean ± std over seeds, with the {level} bootstrap interval of "
             "the accuracy.")
    if (summary["method"] == "pifi_oracle").any():
        intro += f" {rst_code('pifi_oracle')} is the swept layer with the best validation accuracy."
    if (summary["method"] == "pifi_race").any():
        intro += (f" {rst_code('pifi_race')} is the layer successive halving over the swept layers found; training "
                  "runs = each method's cost in whole runs.")
    return [_heading("Methods", "-"), intro, _list_table(headers, [_cells(row) for row in rows])]


def _mean_std(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _interval(low: float, high: float) -> str:
    return f"{100 * low:.1f}–{100 * high:.1f}"


def _comparisons_section(comparisons: pd.DataFrame, level: str) -> list[str]:
    headers = ["dataset", "SLM", "LLM", "comparison", "difference (points)", "verdict"]
    rows = []
    for r in comparisons.to_dict("records"):
        significant = bool(r["significant"])
        verdict = (f"{r['a']} {'better' if r['difference'] > 0 else 'worse'}" if significant
                   else "no significant difference")
        cells = _cells([r["dataset"], r["slm"], r["llm"], f"{r['a']} − {r['b']}",
                        difference_text(r["difference"], r["low"], r["high"]), verdict])
        cells[-1] = f"**{cells[-1]}**" if significant else cells[-1]
        rows.append(cells)
    intro = (f"Paired bootstrap over the same test rows and seeds: the difference in test accuracy with its {level} "
             "interval; a winner (in bold) is named only where the interval excludes 0.")
    return [_heading("Paired comparisons", "-"), intro, _list_table(headers, rows)]


def _selectors_section(selectors: pd.DataFrame, level: str) -> list[str]:
    headers, rows, drives = selector_table(selectors, decimals=1)
    rows = [_cells(row) for row in rows]
    for row, bold in zip(rows, drives):
        row[3] = f"**{row[3]}**" if bold else row[3]
    notes = [no_sweep_sentence(selectors, code=rst_code, text=_escape), f"The selector in bold drives {rst_code('pifi_ilm')}.",
             unstable_note(code=rst_code) if any(is_unstable(v) for v in selectors["win_rate"]) else None,
             convergence_note(code=rst_code) if any_not_converged(selectors) else None]
    intro = _escape(selector_intro(selectors, level))
    return [_heading("Selectors", "-"), intro, _list_table(headers, rows), *(n for n in notes if n)]


def _closing(level: str) -> str:
    return ("The figures per dataset (accuracy per swept layer with every selector's choice, and the paired "
            "differences between the methods) are in this report's Figures category, the full-precision tables in its Tables category. Intervals "
            f"are {level} paired bootstrap intervals over test rows and seeds; a difference is called significant "
            "only when its interval excludes 0.")


# --- reStructuredText ------------------------------------------------------------------------------

def _heading(text: str, underline: str) -> str:
    return f"{text}\n{underline * len(text)}"


def _list_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [list(headers), *rows]:
        lines += [f"   {'*' if i == 0 else ' '} - {cell}" for i, cell in enumerate(row)]
    return "\n".join(lines)


def _cells(row: Sequence) -> list[str]:
    return [_cell(value) for value in row]


def _cell(value) -> str:
    text = _escape(str(value))
    # a cell that reads as a list marker ("-", "+ x", "1. x") would become a nested list
    return "\\" + text if re.match(r"([-+*•]|\d+[.)]|#\.)(\s|$)", text) else text


def _escape(text: str) -> str:
    """Plain text as reStructuredText: no inline markup, no reference (a word ending in _)."""
    text = re.sub(r"([\\*`|])", r"\\\1", text)
    return re.sub(r"_(?=\s|$|[.,;:!?)\]'\"])", r"\\_", text)


def _jinja_safe(text: str) -> str:
    """Break Jinja's openers with an escape that docutils drops, so Snakemake's Jinja pass leaves text alone."""
    for opener in JINJA_OPENERS:
        text = text.replace(opener, opener[0] + "\\" + opener[1])
    return text
