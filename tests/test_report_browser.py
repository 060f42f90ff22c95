"""The HTML report in a real browser: it opens on its heading and verdict, and its cells are one line.

Snakemake's report template centres its first page vertically in a screen-high box and narrows it to
32rem, so a long page opened on its middle with the heading above the top edge, and an interval wrapped
over three lines. The Makefile's `report` target passes workflow/report/stylesheet.css to fix that.

The page is the real one (pifi.report_page on test_summary's synthetic tables), in a one-rule workflow
whose report is built with the stylesheet the Makefile's `report` recipe passes: no pipeline run. It is
opened in headless Chromium through Selenium; without them (apt: chromium chromium-driver) the tests skip.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pifi.report_page import TITLE, report_page
from test_report_page import SELECTION, run_config
from test_summary import ALL_METHODS, tables_for, write_project

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
WIDTH = 1400
INTERVAL = re.compile(r"^[+-]?\d+\.\d \[[+-]?\d+\.\d, [+-]?\d+\.\d\]$")  # e.g. "-10.1 [-16.6, -3.0]"
MEAN_STD = re.compile(r"^\d+\.\d ± \d+\.\d$")  # e.g. "57.7 ± 4.0"
WORKFLOW = """report: "report.rst"

rule all:
    input: "done.txt"

rule done:
    output: "done.txt"
    shell: "touch {output}"
"""


def makefile_report_args() -> list[str]:
    """The report options of the Makefile's `report` recipe after `--report report.html` (make -n runs nothing)."""
    dry = subprocess.run(["make", "-n", "--no-print-directory", "report", "PROJECT=x"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    command = " ".join(dry.replace("\\\n", " ").splitlines())
    words = shlex.split(command[command.index("--report report.html"):])
    return words[2:words.index("echo")] if "echo" in words else words[2:]


def browser_paths() -> tuple[str, str]:
    """Chromium and its driver, or a skip that says what is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    return chromium, driver


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    """report.html of a one-rule workflow whose first page is report_page's, built as the Makefile builds it."""
    root = tmp_path_factory.mktemp("report")
    tables = tables_for(write_project(root / "project"))
    (root / "report.rst").write_text(report_page(tables, run=run_config(ALL_METHODS), selection=SELECTION))
    (root / "Snakefile").write_text(WORKFLOW)
    args = makefile_report_args()
    result = subprocess.run([str(SNAKEMAKE), "--snakefile", str(root / "Snakefile"), "--cores", "1",
                             "--directory", str(root), "--report", "report.html", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "report.html"


@pytest.fixture(scope="module")
def driver() -> Iterator:
    chromium, chromedriver = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield browser
    finally:
        browser.quit()


def open_report(driver, path: Path, height: int) -> None:
    """Load the report in a WIDTH x height viewport (exactly: --window-size would include the window's frame)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False})
    driver.get(path.as_uri())
    # The page is drawn by React; the rule graph beside it by vega, which changes the page's height.
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return !!document.querySelector('.prose h1.title') && !!document.querySelector('#rulegraph canvas, #rulegraph svg')"))
    driver.execute_script("return new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def box(driver, css: str) -> dict:
    """The element's bounding rect, its text, and whether it is what the viewport shows at its first line."""
    return driver.execute_script("""
        const e = document.querySelector(arguments[0]);
        if (!e) return null;
        const r = e.getBoundingClientRect();
        const seen = document.elementFromPoint(r.left + 5, Math.min(r.top + 5, innerHeight - 1));
        return {top: r.top, bottom: r.bottom, text: e.textContent, shown: !!seen && e.contains(seen)};
    """, css)


def cell_lines(driver) -> list[tuple[str, float]]:
    """(text, lines it takes) of every table cell: its text's height over the cell's line height."""
    return [(text, lines) for text, lines in driver.execute_script("""
        return [...document.querySelectorAll('.prose td')].map(td => {
            const range = document.createRange();
            range.selectNodeContents(td);
            return [td.textContent.trim(), range.getBoundingClientRect().height / parseFloat(getComputedStyle(td).lineHeight)];
        });
    """)]


# driver before report_html: without a browser the tests skip before building a report.
@pytest.mark.parametrize("height", [900, 2400])
def test_report_opens_on_its_heading_and_verdict(driver, report_html, height):
    open_report(driver, report_html, height)
    heading = box(driver, ".prose h1.title")
    verdict = box(driver, ".prose #verdict li")
    assert heading["text"] == TITLE
    assert "pifi_ilm" in verdict["text"]
    for name, element in (("heading", heading), ("first verdict", verdict)):
        assert 0 <= element["top"] < height, f"{name} top at {element['top']:.0f}px, outside the {height}px viewport"
        assert element["shown"], f"{name} is covered by something else"


def test_an_interval_and_a_mean_std_take_one_line(driver, report_html):
    open_report(driver, report_html, 900)
    cells = cell_lines(driver)
    intervals = [c for c in cells if INTERVAL.match(c[0])]
    mean_stds = [c for c in cells if MEAN_STD.match(c[0])]
    assert intervals and mean_stds, "the page has no interval or mean ± std cell"
    wrapped = [(text, round(lines, 1)) for text, lines in intervals + mean_stds if lines > 1.5]
    assert not wrapped, f"cells over several lines (text, lines): {wrapped}"
