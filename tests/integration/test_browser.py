"""The Airflow UI in headless Chromium (Debian's package, driven by Playwright): sign in, trigger a
run with params through the trigger form, start a backfill through its form, open the status page
(and be refused it as a user who may read no DAG).

Screenshots go to screenshots/ (ignored by git), for a person to look at.
"""

from __future__ import annotations

import time

import pytest

import running_airflow as ra
from support import ROOT, query

pytestmark = pytest.mark.integration

DAG = "es_message_export"
SHOTS = ROOT / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# The machine's network is closed: without these, Chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser(running_airflow):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def signed_in(browser, username: str, shot: str | None = None):
    """A page of a new browser context, signed in through the login form."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id="UTC")
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(f"{ra.URL}/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill((ra.INSTANCE_HOME / f"{username}_password").read_text().strip())
    if shot:
        page.screenshot(path=SHOTS / shot)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{ra.URL}/")
    return page


@pytest.fixture(scope="module")
def page(browser):
    return signed_in(browser, "admin", shot="01-login.png")


def open_trigger_dialog(page):
    page.goto(f"{ra.URL}/dags/{DAG}")
    page.get_by_role("button", name="Trigger").first.click()
    return page.get_by_role("dialog")


def fill_params(dialog, **params):
    for name, value in params.items():
        if isinstance(value, bool):
            box = dialog.locator(f"input[name=element_{name}]")
            if box.is_checked() != value:
                dialog.locator(f"label:has(input[name=element_{name}])").click()
        else:
            dialog.locator(f"input[name=element_{name}]").fill(str(value))


def newest_run(api, run_type: str, before: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [r for r in api.runs(DAG) if r["run_type"] == run_type and r["dag_run_id"] not in before]
        if new:
            return new[0]["dag_run_id"]
        time.sleep(1)
    raise AssertionError(f"no new {run_type} run of {DAG} appeared within {timeout}s")


def test_trigger_form_runs_the_export_with_the_params_given(page, running_airflow):
    api = running_airflow.api
    before = {r["dag_run_id"] for r in api.runs(DAG)}
    dialog = open_trigger_dialog(page)
    fill_params(dialog, start="2024-10-01", end="2024-10-02", batch_size=150, reprocess=True)
    dialog.screenshot(path=SHOTS / "02-trigger-form.png")
    dialog.get_by_role("button", name="Trigger").click()

    run_id = newest_run(api, "manual", before)
    assert api.wait_for_runs(DAG, [run_id], timeout=600) == {run_id: "success"}
    batch_size, reprocess, start, completed = query(
        ra.TRACKING_DB, "SELECT batch_size, reprocess, interval_start, completed FROM job_runs WHERE run_id = %s",
        run_id)[0]
    assert (batch_size, reprocess, start.date().isoformat()) == (150, 1, "2024-10-01")
    assert completed == 300  # reprocess: the whole day again, whatever ran before
    page.goto(f"{ra.URL}/dags/{DAG}/runs/{run_id}")
    page.get_by_text("reconcile").first.wait_for()
    page.screenshot(path=SHOTS / "03-run.png")


def test_backfill_form_creates_one_run_per_day(page, running_airflow):
    api = running_airflow.api
    before = {b["id"] for b in api.call("GET", "/api/v2/backfills", params={"dag_id": DAG})["backfills"]}
    dialog = open_trigger_dialog(page)
    dialog.get_by_text("Backfill", exact=True).click()
    dialog.locator("input[name=from_date]").fill("2024-10-10T00:00")
    dialog.locator("input[name=to_date]").fill("2024-10-11T00:00")
    dialog.get_by_text("Missing and Errored Runs").click()
    dialog.screenshot(path=SHOTS / "04-backfill-form.png")
    dialog.get_by_role("button", name="Run Backfill").click()

    deadline = time.monotonic() + 60
    while True:
        backfills = api.call("GET", "/api/v2/backfills", params={"dag_id": DAG})["backfills"]
        created = [b for b in backfills if b["id"] not in before]
        if created or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(created) == 1, backfills
    assert (created[0]["from_date"][:10], created[0]["to_date"][:10]) == ("2024-10-10", "2024-10-11")
    assert created[0]["reprocess_behavior"] == "failed"
    # The scheduler creates a backfill's runs as it processes the backfill, not all at once.
    deadline = time.monotonic() + 60
    while True:
        runs = [r["dag_run_id"] for r in api.runs(DAG) if r["run_type"] == "backfill"
                and r["logical_date"][:10] in ("2024-10-10", "2024-10-11")]
        if len(runs) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(runs) == 2
    assert set(api.wait_for_runs(DAG, runs, timeout=600).values()) == {"success"}


def test_status_page_in_the_ui_lists_the_jobs(page, running_airflow):
    page.goto(f"{ra.URL}/plugin/es-export")
    frame = page.frame_locator("iframe")
    frame.locator("table#jobs").wait_for()
    newest = query(ra.TRACKING_DB, "SELECT run_id FROM job_runs ORDER BY id DESC LIMIT 1")[0][0]
    frame.get_by_text(newest).first.wait_for()
    page.screenshot(path=SHOTS / "05-status-page.png", full_page=True)
    assert frame.locator("table#jobs tr").count() > 1
    # The job the trigger form started: 300 messages in batches of 150.
    frame.locator("tr", has_text="2/2").get_by_text("batches, failures").first.click()
    frame.locator("table#batches tr", has_text="150").first.wait_for()
    page.screenshot(path=SHOTS / "06-status-page-one-job.png", full_page=True)


def test_status_page_refuses_a_user_who_may_read_no_dag(browser, running_airflow):
    """NO_ACCESS_USER has no role: Airflow signs it in (cookie) but lets it read no DAG."""
    page = signed_in(browser, ra.NO_ACCESS_USER)
    resp = page.goto(f"{ra.URL}/es-export/")
    assert resp.status == 403
    page.get_by_text("You may read none of the export DAGs").wait_for()
    page.screenshot(path=SHOTS / "07-status-page-no-access.png", full_page=True)
    assert page.locator("table#jobs").count() == 0
    page.context.close()
