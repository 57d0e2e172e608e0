"""The report and the dashboard in headless Chromium: loads clean, images decode, keys move steps."""

import os
import shutil

import pytest

from steplens.report.html import build_report
from steplens.report.serve import serve_in_thread
from report_fixture import make_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
        pytest.skip("no chromium here (CI installs it and fails without it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def check_page(browser, url, shot):
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_load_state("load")
    assert errors == []
    decoded = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
    assert decoded and all(decoded)
    assert page.locator(".viewer").count() >= 1
    viewer = page.locator(".viewer").first
    viewer.focus()
    assert viewer.get_attribute("data-step") == "0"
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert viewer.get_attribute("data-step") == "2"
    page.keyboard.press("j")
    assert viewer.get_attribute("data-step") == "1"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 5000
    page.close()


def test_report_file_in_browser(browser, tmp_path):
    d = make_run(tmp_path)
    check_page(browser, build_report(d).as_uri(), tmp_path / "report.png")


def test_dashboard_in_browser(browser, tmp_path):
    make_run(tmp_path, "a")
    srv, url = serve_in_thread(tmp_path)
    try:
        check_page(browser, url + "/run/a", tmp_path / "dash.png")
    finally:
        srv.shutdown()
        srv.server_close()
