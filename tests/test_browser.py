"""The report and the dashboard in headless Chromium: no console errors, images decode, keys move steps.

Needs the `playwright` package and a system Chromium (Debian's `chromium`; never `playwright install`).
Without them the tests skip locally and fail in CI (CI=true), where .ci/run installs Chromium.
"""

import os
import re
import shutil

import pytest

from fixtures_report import make_demo
from steplens.report.html import build_report
from steplens.report.serve import running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture(scope="module")
def browser():
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"chromium ({CHROMIUM}; Debian: sudo apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        reason = f"browser tests need {' and '.join(missing)}"
        if IN_CI:
            pytest.fail(reason + "; CI must install them (.ci/run)")
        pytest.skip(reason)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def open_page(browser):
    """Open a URL; the test fails on any console error or uncaught exception on the page."""
    pages = []

    def go(url):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_load_state("load")
        pages.append((page, errors))
        return page, errors

    yield go
    for page, errors in pages:
        assert errors == [], errors
        page.close()


def images_decoded(page):
    return page.eval_on_selector_all("main img", "els => els.map(e => e.complete && e.naturalWidth > 0)")


def check_viewer(page):
    viewer = page.locator(".viewer").first
    viewer.focus()
    img = viewer.locator(".stage img")
    first = img.get_attribute("src")
    assert viewer.get_attribute("data-step") == "0"
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert viewer.get_attribute("data-step") == "2" and img.get_attribute("src") != first
    page.keyboard.press("k")
    assert viewer.get_attribute("data-step") == "1"
    page.keyboard.press("j")
    page.keyboard.press("ArrowRight")  # clamps at the last step
    assert viewer.get_attribute("data-step") == "2"
    page.keyboard.press("Home")
    assert viewer.get_attribute("data-step") == "0" and img.get_attribute("src") == first
    assert "step 0 / 2" in viewer.locator(".lbl").inner_text()
    if viewer.locator("select").count():  # switching sample keeps the step
        page.keyboard.press("End")
        viewer.locator("select").select_option("1")
        assert viewer.get_attribute("data-sample") == "s1" and viewer.get_attribute("data-step") == "2"
    assert all(images_decoded(page))


def test_report_file(open_page, tmp_path):
    report = build_report(make_demo(tmp_path / "demo"))
    page, _ = open_page(report.as_uri())
    decoded = images_decoded(page)
    assert len(decoded) >= 4 and all(decoded)  # headline plot, two plots, the GIF, the viewer
    assert page.locator("img[src^='data:image/gif']").count() == 2
    assert page.locator(".viewer").count() == 1
    check_viewer(page)
    from playwright.sync_api import expect

    page.locator("button.copy").first.click()
    expect(page.locator("button.copy").first).to_have_text(re.compile("copied|press Ctrl"), timeout=3000)
    page.locator(".fig img").first.click()  # click to zoom, Escape closes
    assert page.locator(".lightbox.on").count() == 1
    page.keyboard.press("Escape")
    assert page.locator(".lightbox.on").count() == 0
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_dashboard(open_page, tmp_path):
    make_demo(tmp_path / "root")
    with running(tmp_path / "root") as url:
        page, _ = open_page(url + "/")
        assert page.locator("a[href='/run/cos']").count() == 1
        page, _ = open_page(url + "/run/cos")
        assert all(images_decoded(page)) and page.locator("img[src='/files/cos/anim.gif']").count() == 1
        check_viewer(page)
        shot = tmp_path / "dash.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        page, _ = open_page(url + "/steps?run=cos&sample=s0")
        check_viewer(page)
        page, _ = open_page(url + "/compare?a=cos&b=behaviour")
        assert all(images_decoded(page)) and page.locator(".cols .fig").count() == 4
        page, _ = open_page(url + "/run/.")
        assert all(images_decoded(page)) and page.locator("section.run").count() == 2


def test_demo_opens_with_the_findings(browser, quick_demo, tmp_path):
    """The quick demo's report: findings first, a verdict and a loaded figure on every card, four cards on the first screen."""
    import json

    out, code, output = quick_demo
    assert code == 0, output
    findings = json.loads((out / "summary.json").read_text())["findings"]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((out / "report.html").as_uri())
    page.wait_for_load_state("load")
    first = page.evaluate("() => { const h = document.querySelector('main > header'); "
                          "return [h === document.querySelector('main').firstElementChild, h.nextElementSibling.className]; }")
    assert first == [True, "findings"]  # the title, then the findings panel: the first content
    cards = page.locator(".fcard")
    assert cards.count() == len(findings) >= 10
    state = page.eval_on_selector_all(".fcard", """els => els.map(e => ({
        verdict: e.querySelector('.verdict').textContent.trim(),
        img: !!e.querySelector('img.thumb') && e.querySelector('img.thumb').complete && e.querySelector('img.thumb').naturalWidth > 0,
        top: e.querySelector('img.thumb') ? e.querySelector('img.thumb').getBoundingClientRect().bottom : 1e9,
        cardTop: e.getBoundingClientRect().top}))""")
    assert [s["verdict"] for s in state] == [f["verdict"] for f in findings]
    measured = [s for s, f in zip(state, findings) if f["verdict"] != "not measured in this run"]  # the splice card: no demo stage
    assert all(s["verdict"] for s in state) and measured and all(s["img"] for s in measured), state
    assert sum(s["top"] <= 900 for s in state) >= 4  # at least four verdict cards with their figures on the first screen
    assert page.locator("h1").bounding_box()["y"] < 100 and "not meaningful" in page.locator(".findings .banner").inner_text()
    assert page.locator(".viewer").count() == 1 and page.locator(".viewer select").count() == 1  # near the top, with a picker
    page.locator(".fcard img.thumb").first.click()  # a card's figure zooms like any figure
    assert page.locator(".lightbox.on").count() == 1
    page.keyboard.press("Escape")
    shot = tmp_path / "demo_first_screen.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    assert errors == [], errors
    page.close()


def test_each_probe_report_alone(open_page, quick_demo, tmp_path):
    """`steplens report STAGE` on each of the demo's run folders: loads cleanly, labelled numbers, no raw top-level keys shown."""
    import json

    out, code, output = quick_demo
    assert code == 0, output
    for stage in ("cos", "behaviour", "perturb", "cka", "layers", "ensemble"):
        report = build_report(out / stage, tmp_path / f"{stage}.html")
        page, _ = open_page(report.as_uri())
        decoded = images_decoded(page)
        assert decoded and all(decoded), stage
        assert page.locator(".labelled tr").count() >= 3, stage
        text = page.locator("main").inner_text()
        keys = [k for k in json.loads((out / stage / "summary.json").read_text()) if "_" in k]
        assert not [k for k in keys if k in text], (stage, [k for k in keys if k in text])
        if stage == "cos":
            check_steps_move(page)


def check_steps_move(page):
    viewer = page.locator(".viewer").first
    viewer.focus()
    assert viewer.get_attribute("data-step") == "0"
    page.keyboard.press("ArrowRight")
    assert viewer.get_attribute("data-step") == "1"
