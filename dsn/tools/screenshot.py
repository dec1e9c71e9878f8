"""``python -m dsn.tools.screenshot``: the README's picture, taken by driving the real app in Chromium.

Starts the app on a free port, clicks the first example, opens the patch
correspondence view and saves the page from the header down to the
correspondence figure (``assets/screenshot.png`` by default). Uses Debian's Chromium (``/usr/bin/chromium``) through
Playwright; it never downloads a browser. The browser test reuses these helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "assets" / "screenshot.png"
PHONE_OUT = DEFAULT_OUT.with_name("screenshot-phone.png")
CHECKS_OUT = {"grid-plot": DEFAULT_OUT.with_name("screenshot-grid.png"), "sanity-plot": DEFAULT_OUT.with_name("screenshot-sanity.png")}
TIMEOUT_MS = 120_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(weights: str | None = None) -> Iterator[tuple[gr.Blocks, str]]:
    """The app, launched in this process on a free port: yields (demo, url); closes it afterwards."""
    from dsn.loading import ModelInfo, load
    from dsn.ui import build_app, launch_options, prepare
    from dsn.ui.runtime import pick_device

    model = load(weights, device=pick_device())
    info = ModelInfo.of(model)
    demo = prepare(build_app(model, info))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Debian Chromium under Playwright (a ``Browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_example(page: Page, label: str = "writer 1: genuine pair") -> None:
    """Click a gallery example and wait until the verdict and its figure are on screen."""
    page.wait_for_selector("#examples", timeout=TIMEOUT_MS)
    before = page.locator("#verdict-area").inner_text()
    page.get_by_text(label, exact=True).click()
    page.wait_for_function(
        "before => { const b = document.querySelector('#verdict-banner'); return b && b.innerText !== before; }",
        arg=before,
        timeout=TIMEOUT_MS,
    )
    page.wait_for_selector("#distance-plot .js-plotly-plot", timeout=TIMEOUT_MS)


def show_view(page: Page, tab: str, plot_id: str) -> None:
    """Open one of the view tabs and wait for its Plotly figure to render."""
    page.locator("#view-tabs").get_by_role("tab", name=tab).click()
    page.wait_for_selector(f"#{plot_id} .js-plotly-plot .main-svg", timeout=TIMEOUT_MS)
    page.wait_for_timeout(800)  # let Plotly finish its layout transition before a screenshot


def checks_screenshots(browser: Browser, url: str) -> int:
    """The "Check the explanations" view of the forgery example: all five methods, then the sanity check."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
    page.goto(url)
    open_example(page, "writer 1: forgery")
    page.locator("#view-tabs").get_by_role("tab", name="Check the explanations").click()
    for button, plot in (("#grid-run", "grid-plot"), ("#sanity-run", "sanity-plot")):
        page.click(button)
        page.wait_for_selector(f"#{plot} .js-plotly-plot .main-svg", timeout=10 * TIMEOUT_MS)
        page.wait_for_timeout(800)
        page.locator(f"#{plot}").screenshot(path=str(CHECKS_OUT[plot]))
        print(CHECKS_OUT[plot])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsn.tools.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--phone", action="store_true", help="390x844 at 2x: what a phone shows after tapping the example")
    parser.add_argument("--checks", action="store_true", help="the method grid and the sanity-check figure (about 2 minutes)")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} is missing; install Debian's chromium package", flush=True)
        return 2
    if args.phone and args.out == DEFAULT_OUT:
        args.out = PHONE_OUT
    with serve(args.weights) as (_, url), chromium() as browser:
        if args.checks:
            return checks_screenshots(browser, url)
        if args.phone:
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            page.goto(url)
            open_example(page, "writer 1: forgery")
            page.wait_for_timeout(1000)  # the verdict scrolls into view
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            print(args.out)
            return 0
        page = browser.new_page(viewport={"width": args.width, "height": 900}, device_scale_factor=1)
        page.goto(url)
        open_example(page)
        show_view(page, "Patch correspondences", "correspondence-plot")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # The whole page down to the correspondence figure: header, inputs, verdict and the matches.
        bottom = page.evaluate(
            "() => Math.max(...['#correspondence-plot', '#examples'].map("
            "s => document.querySelector(s).getBoundingClientRect().bottom + window.scrollY))"
        )
        page.screenshot(path=str(args.out), full_page=True, clip={"x": 0, "y": 0, "width": args.width, "height": bottom + 16})
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
