"""The HTML report's first page: valid reStructuredText that Jinja leaves alone, the verdict first.

The tables come from test_summary's synthetic project (hand-known answers): one dataset x SLM x LLM,
3 seeds; ilm_pc_patching picks layer 0 (70% test), base 52%, the last layer 85%, the oracle layer 2 (75%).
"""

from __future__ import annotations

import jinja2
import pandas as pd
import pytest
from docutils.core import publish_parts

from pifi.report_page import report_page
from pifi.summary import build_tables
from pifi.summary_text import difference_text
from test_summary import ALL_METHODS, BOOT, DATASET, LLM, SCORES, SEEDS, SLM, tables_for, write_project

SELECTION = {"selector": "ilm_pc_patching", "selectors": list(SCORES), "n_samples": 400, "split": "train"}
NO_SWEEP_METHODS = ["base", "pifi_last", "pifi_ilm"]


def run_config(methods, datasets=(DATASET,)) -> dict:
    return {"datasets": list(datasets), "slms": [SLM], "llms": [LLM], "methods": list(methods),
            "seeds": list(SEEDS)}


@pytest.fixture(scope="module")
def sweep_tables(tmp_path_factory):
    return tables_for(write_project(tmp_path_factory.mktemp("sweep")))


@pytest.fixture(scope="module")
def no_sweep_tables(tmp_path_factory):
    files = write_project(tmp_path_factory.mktemp("no_sweep"), layers=(None, 0, 5))
    return tables_for(files, methods=NO_SWEEP_METHODS, sweep=None)


def html(text: str) -> str:
    """docutils' HTML, failing on any warning (a broken table, an unknown reference, stray markup)."""
    return publish_parts(text, writer="html",
                         settings_overrides={"report_level": 2, "halt_level": 2})["html_body"]


def section(page: str, title: str) -> str:
    start = page.index(f"\n{title}\n") + 1
    following = [page.index(f"\n{t}\n", start) for t in ("Verdict", "Methods", "Paired comparisons", "Selectors",
                                                          "Figures and tables") if f"\n{t}\n" in page[start + 1:]]
    return page[start:min(following, default=len(page))]


def table_rows(block: str) -> list[list[str]]:
    """The list-table rows of a block as lists of cells."""
    rows = []
    for line in block.splitlines():
        if line.startswith("   * - "):
            rows.append([line[7:]])
        elif line.startswith("     - ") and rows:
            rows[-1].append(line[7:])
    return rows


@pytest.mark.parametrize("which", ["no_sweep", "sweep"])
def test_page_is_clean_restructuredtext_that_jinja_leaves_alone(which, request):
    methods = NO_SWEEP_METHODS if which == "no_sweep" else ALL_METHODS
    page = report_page(request.getfixturevalue(f"{which}_tables"), run=run_config(methods), selection=SELECTION)
    body = html(page)
    assert "PiFi-ILM: which layer, and is it real?" in body
    assert "<strong>ilm_pc_patching</strong>" in body
    assert not any(opener in page for opener in ("{{", "{%", "{#"))
    assert jinja2.Environment().from_string(page).render() == page.rstrip("\n")
    assert "['" not in page and '["' not in page and "nan" not in page.lower()
    # the verdict comes before the tables behind it
    assert page.index("\nVerdict\n") < page.index("\nMethods\n") < page.index("\nSelectors\n")


def test_no_sweep_page_describes_the_run_and_the_verdict(no_sweep_tables):
    page = report_page(no_sweep_tables, run=run_config(NO_SWEEP_METHODS), selection=SELECTION)
    prose = page.split("\n\n")[1]
    assert prose.startswith(
        f"The SLM {SLM} with one frozen decoder layer of the LLM {LLM} on 1 dataset ({DATASET}), 3 seeds each. "
        "Methods: the SLM alone (``base``), the LLM's last layer (``pifi_last``) and the layer chosen by "
        "ilm_pc_patching from 400 train rows (``pifi_ilm``). The 5 selectors compared: ilm_pc_patching (which "
        "drives ``pifi_ilm``), probe_cv, fisher, last and silhouette.")
    assert prose.endswith("No layer sweep was run, so the selectors are compared by their choices only.")
    comparisons = no_sweep_tables["comparisons"].set_index(["a", "b"])
    vs_base = comparisons.loc[("pifi_ilm", "base")]
    vs_last = comparisons.loc[("pifi_ilm", "pifi_last")]
    vs_base_text = difference_text(vs_base["difference"], vs_base["low"], vs_base["high"])
    vs_last_text = difference_text(vs_last["difference"], vs_last["low"], vs_last["high"])
    assert vs_base_text.startswith("+18.0 [") and vs_last_text.startswith("-15.0 [")
    verdict = section(page, "Verdict")
    assert (f"- **{DATASET}** ({SLM} + {LLM}): ``pifi_ilm`` plugs in layer 0, chosen by ilm_pc_patching (test "
            f"accuracy 70.0%). ``pifi_ilm`` vs ``base``: better ({vs_base_text} points); ``pifi_ilm`` vs "
            f"``pifi_last``: worse ({vs_last_text} points). Unstable: layer 0 won only 60% of the resampled "
            "selections, so other samples may choose another layer.") in verdict.splitlines()
    assert "oracle" not in verdict.lower()


def test_no_sweep_page_tables_are_rounded_and_drop_the_sweep_columns(no_sweep_tables):
    page = report_page(no_sweep_tables, run=run_config(NO_SWEEP_METHODS), selection=SELECTION)
    methods = table_rows(section(page, "Methods"))
    assert methods[0][:8] == ["dataset", "SLM", "LLM", "method", "layer", "seeds", "accuracy (%)", "95% interval"]
    base = next(row for row in methods if row[3] == "base")
    assert base[4:7] == ["\\-", "3", "52.0 ± 2.0"]  # "-" escaped: a bare "-" would be a bullet list
    summary = no_sweep_tables["summary"].set_index("method")
    low, high = summary.loc["base", "accuracy_low"], summary.loc["base", "accuracy_high"]
    assert base[7] == f"{100 * low:.1f}–{100 * high:.1f}"
    comparisons = table_rows(section(page, "Paired comparisons"))
    assert comparisons[1][3:] == ["pifi_ilm − base", comparisons[1][4], "**pifi_ilm better**"]
    assert comparisons[1][4].startswith("+18.0 [")
    selectors = section(page, "Selectors")
    rows = table_rows(selectors)
    assert rows[0] == ["dataset", "SLM", "LLM", "selector", "layer", "win rate", "modal", "probes converged"]
    assert rows[1] == [DATASET, SLM, LLM, "**ilm_pc_patching**", "0", "60% (unstable)", "0", "yes"]
    assert ("Oracle, regret, rank, ρ, τ and top 3 need the layer sweep (``pifi_sweep`` in ``run.methods``); this "
            "run has none, so only each selector's choice and stability are shown.") in selectors
    assert "(unstable) = the chosen layer won fewer than 70%" in selectors
    assert "¹ no = " in selectors  # probe_cv's probe did not converge on one layer


def test_sweep_page_gives_the_oracle_and_the_regret(sweep_tables):
    page = report_page(sweep_tables, run=run_config(ALL_METHODS), selection=SELECTION)
    prose = page.split("\n\n")[1]
    assert "each of 3 swept layers (``pifi_sweep``)" in prose
    assert "No layer sweep" not in page and "need the layer sweep" not in page
    ilm = sweep_tables["selectors"].set_index("selector").loc["ilm_pc_patching"]
    regret = difference_text(ilm["regret"], ilm["regret_low"], ilm["regret_high"])
    assert regret.startswith("+5.0 [")
    verdict = section(page, "Verdict")
    assert (f"The oracle is layer 2 (best validation accuracy of 3 swept layers); the chosen layer ranks 3 of 3; "
            f"regret {regret} points, significant: the chosen layer is really worse on test.") in verdict
    rows = table_rows(section(page, "Selectors"))
    assert rows[0][5:13] == ["oracle", "regret (pts)", "interval", "tied", "rank", "ρ", "τ", "top 3"]
    assert rows[1][3:] == ["**ilm_pc_patching**", "0", "2", "+5.0\\*", rows[1][7], "no", "3/3", "-1.00", "-1.00",
                           "yes", "60% (unstable)", "0", "yes"]
    methods = table_rows(section(page, "Methods"))
    assert next(row for row in methods if row[3] == "pifi_oracle")[4:7] == ["2", "3", "75.0 ± 0.0"]


def test_page_reads_the_same_from_the_csvs(sweep_tables, tmp_path):
    """summarize.py builds it from memory, a later reader from the CSVs: the page must not change."""
    read_back = {}
    for name, table in sweep_tables.items():
        table.to_csv(tmp_path / f"{name}.csv", index=False)
        read_back[name] = pd.read_csv(tmp_path / f"{name}.csv")
    run = run_config(ALL_METHODS)
    assert report_page(read_back, run=run, selection=SELECTION) == report_page(sweep_tables, run=run,
                                                                                selection=SELECTION)


def test_odd_names_and_jinja_openers_are_escaped(no_sweep_tables):
    """Names are config keys: one ending in _ (a reference), holding * or | (markup) or {{ (Jinja) must not break."""
    odd = "sst2_"
    tables = {name: table.replace({DATASET: odd, "ilm_pc_patching": "pc|patch_"}) for name, table in
              no_sweep_tables.items()}
    run = run_config(NO_SWEEP_METHODS, datasets=[odd, "a*b", "x{{y}}", "{% z %}"])
    page = report_page(tables, run=run, selection={**SELECTION, "selector": "pc|patch_"})
    assert "**sst2\\_** (" in page  # the verdict's name, escaped
    html(page)
    assert not any(opener in page for opener in ("{{", "{%", "{#"))
    assert jinja2.Environment().from_string(page).render() == page.rstrip("\n")
    assert "x{{y}}" in html(page)  # docutils drops the escape again


def test_base_only_page(tmp_path):
    files = write_project(tmp_path, layers=(None,), selector=None)
    tables = build_tables(files["metrics"], [], [], methods=["base"], boot=BOOT)
    page = report_page(tables, run=run_config(["base"]), selection=SELECTION)
    html(page)
    assert page.split("\n\n")[1] == (f"The SLM {SLM} alone on 1 dataset ({DATASET}), 3 seeds each. "
                                     "Methods: the SLM alone (``base``).")
    assert f"- **{DATASET}** ({SLM} alone): only the SLM was trained, test accuracy 52.0%." in page
    assert "\nSelectors\n" not in page and "\nPaired comparisons\n" not in page
