"""The web view in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright,
against a real orchestrator and worker.

list -> experiment -> compare -> the RD charts drawn (one SVG trace per curve and metric); a
running experiment's page reaches SUCCEEDED through server-sent events without a reload; the
pages work with JavaScript off; markup in labels and error text never runs; and every request the
browser makes goes to 127.0.0.1. Each browser logs in through the one-time URL, as a user of
``codecbench web`` does. ``make web-screens`` runs this module with
``CODECBENCH_WEB_SCREENS=out/web``, which saves a screenshot of each page there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from helpers import AGENTS
from helpers.services import attach_worker, orchestrator, write_images
from helpers.web import World, login_url, served, web_app, world
from starlette.applications import Starlette

from codecbench import states
from codecbench.client import Client

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed: install the Debian package 'chromium' "
                                                "(make setup does, as root with apt)"),
    pytest.mark.timeout(180),
]
SCREENS = Path(os.environ["CODECBENCH_WEB_SCREENS"]) if os.environ.get("CODECBENCH_WEB_SCREENS") else None
WAIT_MS = 60_000

if CHROMIUM is not None:
    from playwright.async_api import Browser, Page, async_playwright, expect


@pytest_asyncio.fixture(scope="module")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with world(tmp_path_factory.mktemp("web-browser")) as made:
        yield made


@pytest_asyncio.fixture(scope="module")
async def view(services: World) -> AsyncIterator[tuple[Starlette, str]]:
    app = web_app(services.orchestrator.address)
    async with served(app) as base:
        yield app, base


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    # Debian's chromium, never Playwright's own download; --no-sandbox: tests run as root in CI
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


class Recorded:
    """A page, and every URL it requested."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))

    def off_host(self) -> list[str]:
        return [u for u in self.requests if urlsplit(u).hostname != "127.0.0.1" and not u.startswith("data:")]


async def screen(page: Page, name: str) -> None:
    if SCREENS is not None:
        SCREENS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)


async def log_in(page: Page, app: Starlette, base: str) -> None:
    """Opens a one-time login URL in ``page``'s browser context; the view then redirects to the list."""
    await page.goto(login_url(app, base))
    await page.wait_for_url(f"{base}/")


async def test_the_login_page_the_one_time_url_and_a_pasted_token(browser: Browser, view: tuple[Starlette, str],
                                                                  services: World) -> None:
    app, url = view
    page = await browser.new_page()
    await page.goto(url)
    assert page.url == f"{url}/login" and await page.locator("form#login input[name=token]").count() == 1
    await screen(page, "login")
    await log_in(page, app, url)
    assert "code=" not in page.url and await page.title() == "experiments · codecbench"
    cookies = await page.context.cookies()
    assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]
    await page.click("button:has-text('log out')")
    await page.wait_for_url(f"{url}/login")
    await page.goto(url)
    assert page.url == f"{url}/login"
    # a user's own token, pasted: the browser's POST (with its Origin) logs in as that user
    await page.fill("form#login input[name=token]", services.alice_token)
    await page.click("button:has-text('log in')")
    await page.wait_for_url(f"{url}/")
    shown = await page.locator("#experiments").inner_text()
    assert services.curve_a.experiment_id in shown and services.curve_b.experiment_id not in shown
    await page.close()


async def test_list_experiment_compare_and_the_chart(browser: Browser, view: tuple[Starlette, str],
                                                     services: World) -> None:
    app, url = view
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    seen = Recorded(page)
    await log_in(page, app, url)
    assert await page.title() == "experiments · codecbench"  # the label's <script> did not run
    assert await page.locator("#experiments tbody tr").count() == 3
    await screen(page, "experiments")

    await page.click(f"text={services.curve_a.experiment_id}")
    await page.wait_for_url(f"**/experiments/{services.curve_a.experiment_id}")
    assert await page.locator("#points tbody tr").count() == 4
    # reconstructions: original and decoded image side by side; the pointer over one zooms both alike
    pair = page.locator("figure.pair").first
    images = pair.locator(".side img")
    await pair.scroll_into_view_if_needed()
    for i in range(2):
        await expect(images.nth(i)).to_have_js_property("complete", True)
        assert await images.nth(i).evaluate("img => img.naturalWidth") == 176
    await pair.locator(".side").first.hover(position={"x": 20, "y": 30})
    zoomed = [await images.nth(i).evaluate("img => [img.style.transform, img.style.transformOrigin]")
              for i in range(2)]
    assert zoomed[0] == zoomed[1] and zoomed[0][0] == "scale(4)", zoomed
    await screen(page, "reconstructions")
    await page.mouse.move(0, 0)
    await page.evaluate("window.scrollTo(0, 0)")
    await screen(page, "experiment")
    await page.click("#points th >> text=PSNR dB")  # sortable: the server sorts, no script needed
    await page.click("#points th >> text=PSNR dB")
    await page.wait_for_url("**pdesc=1**")
    first = await page.locator("#points tbody tr").first.inner_text()
    assert "quality=80" in first

    await page.goto(f"{url}/experiments/{services.failed.experiment_id}")
    assert await page.title() == f"{services.failed.experiment_id} · codecbench"  # the error's <img> did not run
    assert "onerror" in await page.locator("#error .problem").inner_text()
    await screen(page, "failed-experiment")

    await page.click("nav >> text=compare")
    await page.check(f"input[name=baseline][value={services.curve_a.experiment_id}]")
    await page.check(f"input[name=candidate][value={services.curve_b.experiment_id}]")
    await page.click("button:has-text('compare')")
    await page.wait_for_selector("#rd-psnr .scatterlayer .trace", timeout=WAIT_MS)
    assert await page.locator("#rd-psnr .scatterlayer .trace").count() == 2
    assert await page.locator("#rd-ms-ssim .scatterlayer .trace").count() == 2
    assert await page.locator("#rd-psnr .legendtext").all_text_contents() == [
        f"jpeg ({services.curve_a.experiment_id})", f"jpeg ({services.curve_b.experiment_id})"]
    assert await page.locator("#bd-rate tbody tr").count() == 2
    await screen(page, "compare")

    await page.click("nav >> text=failures")
    assert await page.locator("#groups tbody tr").count() == 1
    await screen(page, "failures")
    await page.click("nav >> text=workers")
    assert "READY" in await page.locator("#workers").inner_text()
    await screen(page, "workers")

    assert len(seen.requests) > 10
    assert seen.off_host() == []
    await page.close()


async def test_every_page_works_without_javascript(browser: Browser, view: tuple[Starlette, str],
                                                   services: World) -> None:
    app, url = view
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    seen = Recorded(page)
    await log_in(page, app, url)
    await page.goto(f"{url}/?state=SUCCEEDED")
    assert await page.locator("#experiments tbody tr").count() == 2
    await page.goto(f"{url}/compare")
    await page.check(f"input[name=baseline][value={services.curve_b.experiment_id}]")
    await page.check(f"input[name=candidate][value={services.curve_a.experiment_id}]")
    await page.click("button:has-text('compare')")
    assert await page.locator("#bd-rate tbody tr").count() == 2
    assert await page.locator("#footnotes li").count() >= 1
    assert await page.locator("#rd-psnr svg").count() == 0  # no script, no chart: the table stands alone
    await page.goto(f"{url}/experiments/{services.curve_b.experiment_id}?isort=psnr&idesc=1")
    assert await page.locator("#images tbody tr").count() == 8
    await page.goto(f"{url}/experiments/{services.curve_a.experiment_id}")  # both images, plainly
    assert await page.locator("figure.pair img").count() == 8
    assert seen.off_host() == []
    await context.close()


async def test_live_progress_reaches_succeeded_without_a_reload(browser: Browser, tmp_path: Path) -> None:
    # An orchestrator with no worker yet: the experiment waits QUEUED while the page opens, then runs
    # once a worker attaches, and its page follows it through server-sent events.
    async with orchestrator(tmp_path / "orchestrator") as orch, Client(orch.address) as client, \
            served(app := web_app(orch.address)) as base:
        dataset = (await client.upload_dataset("live", write_images(tmp_path / "images", [(64, 64), (64, 80)]))).name
        exp = await client.submit(AGENTS / "jpeg", dataset, [{"quality": 20}, {"quality": 60}])
        page = await browser.new_page()
        seen = Recorded(page)
        worker = None
        try:
            await log_in(page, app, base)
            await page.goto(f"{base}/experiments/{exp.experiment_id}")
            state = page.locator("[data-live-experiment] [data-field=state]")
            assert await state.inner_text() == "QUEUED"
            await page.evaluate("window.__loadedOnce = true")  # gone if the page reloads
            await page.wait_for_selector("#events li", timeout=WAIT_MS)  # the stream is open (its QUEUED event)
            worker = await attach_worker(orch, tmp_path / "worker")
            # expect() polls from Playwright's own script: the page's CSP forbids eval, so no wait_for_function
            await expect(state).to_have_text("SUCCEEDED", timeout=WAIT_MS)
            assert await page.evaluate("window.__loadedOnce") is True
            assert "bpp" in await page.locator("[data-live-experiment] [data-field=progress]").inner_text()
            assert await page.locator("#events li").count() >= 4  # queued, dispatched, progress..., result
            await screen(page, "live")
            assert (await client.get(exp.experiment_id)).state == states.SUCCEEDED
        finally:
            await page.close()
            if worker is not None:
                await worker.stop()
        assert seen.off_host() == []
