"""The report's data viewer (``viewer.html``): its data matches the store, and in a real headless browser (Debian's
chromium, driven through chromedriver by selenium) it loads without a console error, filters by verdict, finds a
planted task by search, leads from a seed to the tasks its prompts produced, and pages 50,000 candidates.

The run directories are written through the real store functions (``sedi.store.seeds``, ``candidates``,
``training``), so the schema and the JSON the filters record are the ones a run writes. Set
``SEDI_VIEWER_SCREENSHOT=docs/viewer.png`` to keep the browser test's screenshot (the one in the docs).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from benchmarks.sample_run import write_sample_run
from sedi.base import redact
from sedi.cli.app import app
from sedi.config.seeds import Task
from sedi.report.viewer import viewer_data, write_viewer, write_viewers
from sedi.store import seeds
from sedi.store.candidates import (
    PlannedRequest,
    Verdict,
    add_candidates,
    machine_task_id,
    record_requests,
    set_verdicts,
)
from sedi.store.candidates import candidate_id as make_id
from sedi.store.db import RunStore
from sedi.store.training import TrainStepRow, replace_example_losses, replace_train_steps

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PLANTED = "quetzalcoatlus"  # a word no other task of the test runs holds
HOSTILE = "Print </script><script>document.title='owned'</script> <!-- as text"
SECRET = "sk-viewer-canary-31337<"  # a credential the run holds, echoed by a teacher into an output
SEEDS = [Task(f"seed_task_{i}", f"Seed instruction {i}: write a {word} poem.") for i, word in enumerate("abcdef")]


def _verdict(n: int) -> Verdict:
    """Kept, rejected by ROUGE-L, contaminated or pending, in turn."""
    if n % 4 == 0:
        return Verdict("kept", pooled=True)
    if n % 4 == 1:
        return Verdict("rejected", "rouge_similarity", {"rouge": 0.83, "nearest": f"Nearest text {n}"})
    if n % 4 == 2:
        return Verdict("rejected", "contaminated", {"matched": f"heldout.jsonl:{n}", "measure": "13-gram", "score": 1})
    return Verdict("pending")


def make_run(run_dir: Path, requests: int, per_request: int, filler: str = "") -> dict[str, Any]:
    """A two-round run of ``requests`` generation requests of ``per_request`` tasks each; request i shows seeds
    i % 6 and (i + 1) % 6 (and, in round 1, a kept task of round 0). Plants a kept task with :data:`PLANTED` in
    request 1, shown seeds 1 and 2, and a rejected one whose instruction is :data:`HOSTILE`; returns their ids.
    ``filler`` lengthens every output (real outputs run to a few hundred characters)."""
    with RunStore(run_dir) as store:
        seeds.add_human_seeds(store, SEEDS)
        half, kept_task = requests // 2, machine_task_id(make_id(0, 0))
        shown = [(SEEDS[i % 6].id, SEEDS[(i + 1) % 6].id) + (kept_task,) * (i >= half) for i in range(requests)]
        record_requests(
            store, [PlannedRequest(f"req-{i}", int(i >= half), "tasks", i, context=shown[i]) for i in range(requests)]
        )
        verdicts = []
        for i in range(requests):
            items = [
                (p, f"Task {i}.{p}: sum up item {p}.", "", f"out {i}.{p} {filler}", None) for p in range(per_request)
            ]
            if i == 1:
                items[0] = (0, f"Explain how a {PLANTED} could fly.", "", "With very long wings.", None)
                items[1] = (1, HOSTILE, "", f"The key is {SECRET}", None)
            add_candidates(store, f"req-{i}", i, int(i >= half), items)
            verdicts += [(make_id(i, p), _verdict(p)) for p in range(per_request)]
        planted, hostile = make_id(1, 0), make_id(1, 1)
        verdicts += [(planted, Verdict("kept", pooled=True)), (hostile, Verdict("rejected", "bad_start"))]
        set_verdicts(store, verdicts)
        with store.transaction():
            replace_train_steps(store, 0, [TrainStepRow(1, 1.75, 2.5, 2e-4, [make_id(0, 0), planted])])
            seeds.mark_attractive(store, [1])
        replace_example_losses(store, 0, {planted: 1.25})
    return {"planted": planted, "hostile": hostile}


def test_viewer_data_matches_the_store_and_leaves_the_run_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ids = make_run(run, requests=8, per_request=5)
    before = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in run.iterdir())
    data = viewer_data(run)
    assert sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in run.iterdir()) == before
    rows = {row[0]: dict(zip(data["fields"], row, strict=True)) for row in data["candidates"]}
    assert len(rows) == 40 and sum(r["verdict"] == "kept" for r in rows.values()) == 16
    planted = rows[ids["planted"]]
    assert PLANTED in planted["instruction"] and planted["round"] == 0
    assert data["contexts"][planted["context"]] == ["seed_task_1", "seed_task_2"]
    contaminated = next(r for r in rows.values() if r["rule"] == "contaminated")
    assert contaminated["detail"]["matched"].startswith("heldout.jsonl:")
    assert data["seeds"]["seed_task_1"][0] == SEEDS[1].instruction
    signals = dict(zip(data["signal_fields"], data["signals"][str(ids["planted"])], strict=True))
    assert signals["grad_norm"] == 1.75 and signals["attractive"] is True and signals["example_loss"] == 1.25
    assert str(make_id(2, 0)) not in data["signals"]  # never trained: no signals, not zeros

    redact.register(SECRET)
    page = write_viewer(run, tmp_path / "out" / "viewer.html").read_text(encoding="utf-8")
    assert "sk-viewer-canary" not in page and f"The key is {redact.MARK}" in page
    # The hostile instruction cannot close the data block: the data's one "</script>" and the code's are all.
    assert page.count("</script>") == 2 and "<!--" not in page


def test_sedi_report_writes_the_viewer_beside_the_report(tmp_path: Path) -> None:
    run = write_sample_run(tmp_path / "run", "sedi")
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert f"viewer: {run / 'viewer.html'}" in result.output
    assert (run / "report.html").is_file() and "sedi-data" in (run / "viewer.html").read_text(encoding="utf-8")
    other = write_sample_run(tmp_path / "other", "self-instruct", seed=1)
    pages = write_viewers([run, other], tmp_path / "both", ["sedi", "self instruct"])
    assert [p.name for p in pages] == ["viewer-sedi.html", "viewer-self-instruct.html"]


# -- in a real browser ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        # The README's test command installs Python packages only, so on a fresh machine these tests are skipped,
        # in the summary with the fix; CI installs the browser and sets SEDI_REQUIRE_BROWSER, so there they fail.
        missing = (
            f"the viewer's browser tests need {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver"
        )
        if os.environ.get("SEDI_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the viewer's browser tests need selenium: pip install -e '.[dev]'")
    profile = tempfile.mkdtemp(prefix="sedi-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1400,900", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver: Any, page: Path) -> None:
    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(page.resolve().as_uri())
    _wait(driver, lambda: driver.find_elements("css selector", "#cand-body tr"))


def _wait(driver: Any, ready: Any, timeout: float = 30.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda _: ready())


def _errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _rows(driver: Any, body: str = "cand-body") -> list[Any]:
    return driver.find_elements("css selector", f"#{body} tr.row")


def _type(driver: Any, element_id: str, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    # As a user types (clear() fires no input event): select all, then type over it.
    box = driver.find_element("id", element_id)
    box.send_keys(Keys.CONTROL + "a")
    box.send_keys(Keys.BACKSPACE + text)


@pytest.mark.slow
def test_viewer_in_a_browser_filters_searches_and_shows_lineage(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    run = tmp_path / "run"
    ids = make_run(run, requests=30, per_request=10)  # 300 candidates: three pages
    _open(browser, write_viewer(run, tmp_path / "viewer.html"))
    assert _errors(browser) == []
    assert browser.title == "Candidates of run"  # the hostile task did not run its script
    assert len(_rows(browser)) == 100 and "of 300" in browser.find_element("id", "cand-info").text

    Select(browser.find_element("id", "f-verdict")).select_by_value("rejected")
    _wait(browser, lambda: "of 150 " in browser.find_element("id", "cand-info").text)
    assert {row.get_attribute("data-verdict") for row in _rows(browser)} == {"rejected"}
    browser.find_element("id", "cand-next").click()
    assert {row.get_attribute("data-verdict") for row in _rows(browser)} == {"rejected"}
    Select(browser.find_element("id", "f-verdict")).select_by_value("")

    _type(browser, "f-search", PLANTED.upper())
    _wait(browser, lambda: len(_rows(browser)) == 1)
    row = _rows(browser)[0]
    assert row.get_attribute("data-id") == str(ids["planted"]) and row.get_attribute("data-verdict") == "kept"
    row.click()  # its details: the seeds its prompt showed and its training signals
    details = _wait(browser, lambda: browser.find_element("css selector", "#cand-body tr.detail")).text
    assert SEEDS[1].instruction in details and SEEDS[2].instruction in details
    assert "grad norm 1.750" in details and "attractive batch" in details and "own loss 1.250" in details

    _type(browser, "f-search", "heldout.jsonl")  # rule details are not searched: only the task's own text
    _wait(browser, lambda: "Nothing matches." in browser.find_element("id", "cand-body").text)
    _type(browser, "f-search", "")
    Select(browser.find_element("id", "f-rule")).select_by_value("contaminated")
    _wait(browser, lambda: "of 60 " in browser.find_element("id", "cand-info").text)
    _rows(browser)[0].click()
    assert "heldout.jsonl:" in browser.find_element("css selector", "#cand-body tr.detail").text
    Select(browser.find_element("id", "f-rule")).select_by_value("")

    browser.find_element("id", "tab-lineage").click()
    _type(browser, "seed-search", SEEDS[2].instruction)
    _wait(browser, lambda: len(browser.find_elements("css selector", "#seeds-body tr.seed")) == 1)
    seed_row = browser.find_element("css selector", "#seeds-body tr.seed")
    assert seed_row.get_attribute("data-seed") == "seed_task_2"
    seed_row.click()
    # Requests 1 and 2 of every six show seed 2: 10 of 30 requests, ten tasks each.
    assert "produced 100 tasks" in browser.find_element("id", "seed-counts").text
    kids = {row.get_attribute("data-id") for row in _rows(browser, "kids-body")}
    assert str(ids["planted"]) in kids and len(kids) == 100
    browser.find_element("id", "seed-filter").click()
    _wait(browser, lambda: browser.find_element("id", "view-candidates").is_displayed())
    assert "of 100 " in browser.find_element("id", "cand-info").text
    first = _rows(browser)[0]
    assert first.get_attribute("data-id") == str(ids["planted"])
    first.click()  # open a kept task and a near-duplicate, for the screenshot
    browser.find_element("css selector", f'#cand-body tr.row[data-id="{ids["planted"] + 5}"]').click()
    assert _errors(browser) == []

    shot = browser.get_screenshot_as_png()
    assert shot.startswith(b"\x89PNG") and len(shot) < 600_000
    if target := os.environ.get("SEDI_VIEWER_SCREENSHOT"):
        Path(target).write_bytes(shot)


@pytest.mark.slow
def test_viewer_of_50000_candidates_is_written_in_seconds_and_pages(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    run = tmp_path / "run"
    make_run(run, requests=50, per_request=1000, filler="A sentence of an output of typical length. " * 8)
    start = time.perf_counter()
    page = write_viewer(run, tmp_path / "viewer.html")
    written = time.perf_counter() - start
    assert written < 10, f"writing the viewer of 50,000 candidates took {written:.1f} s"
    start = time.perf_counter()
    _open(browser, page)
    _wait(browser, lambda: "of 50000 " in browser.find_element("id", "cand-info").text)
    shown = time.perf_counter() - start
    assert len(_rows(browser)) == 100 and shown < 30
    start = time.perf_counter()  # a search over every text (the first one builds the lower-cased index)
    _type(browser, "f-search", PLANTED)
    _wait(browser, lambda: len(_rows(browser)) == 1)
    searched = time.perf_counter() - start
    _type(browser, "f-search", "")
    start = time.perf_counter()
    Select(browser.find_element("id", "f-verdict")).select_by_value("pending")
    _wait(browser, lambda: "of 12500 " in browser.find_element("id", "cand-info").text)
    filtered = time.perf_counter() - start
    assert len(_rows(browser)) == 100 and {row.get_attribute("data-verdict") for row in _rows(browser)} == {"pending"}
    assert _errors(browser) == []
    print(
        f"50,000 candidates: {page.stat().st_size / 1e6:.1f} MB page, written in {written:.2f} s, first page shown "
        f"in {shown:.2f} s, search {searched:.2f} s, verdict filter {filtered:.2f} s (each with selenium's round trips)"
    )
