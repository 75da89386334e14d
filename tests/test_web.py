"""The web view (``codecbench web``) over HTTP against a real orchestrator and worker: every page,
its filters and sorting, escaping of user-controlled text, the BD-rate footnotes of the CLI, the
event stream and its resumption, no reference to another host, and the login: nothing without a
session, one-time codes, a session per token, refused tokens, Host and Origin checks, cookie flags.

The browser's side (the chart drawn, live progress, JavaScript off) is ``tests/test_web_browser.py``.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import math
import re
import signal
import sys
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import markupsafe
import numpy as np
import pytest
import pytest_asyncio
from helpers import AGENTS, TEST_ADMIN_TOKEN
from helpers.web import QUALITIES_A, XSS_ERROR, XSS_LABEL, World, log_in, login_url, served, web_app, world
from PIL import Image
from starlette.applications import Starlette
from typer.testing import CliRunner

from codecbench import analysis, errors, rpc, states, validation
from codecbench.cli import app, views
from codecbench.client import Client
from codecbench.web import live, present, sessions
from orchestrator_svc.scheduler import RECONSTRUCTION_BUDGET_BYTES

pytestmark = pytest.mark.timeout(240)


@pytest_asyncio.fixture(scope="module")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with world(tmp_path_factory.mktemp("web")) as made:
        yield made


@pytest_asyncio.fixture(scope="module")
async def view(services: World) -> AsyncIterator[tuple[Starlette, str]]:
    """The view (its one-time codes log in as the admin) and its base URL."""
    app = web_app(services.orchestrator.address)
    async with served(app) as url:
        yield app, url


@pytest_asyncio.fixture(scope="module")
async def http(view: tuple[Starlette, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A client logged in through a one-time code (as the admin)."""
    app, url = view
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await log_in(client, app)
        yield client


class _Links(HTMLParser):
    """Every URL a page refers to (src, href, action) and the text of its table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "action") and v is not None]


def links(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.urls


def rows(page: str, table_id: str) -> list[str]:
    body = page.split(f'id="{table_id}"', 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr[ >].*?</tr>", body.split("<tbody>", 1)[1], flags=re.S)


async def test_the_list_shows_every_experiment_and_escapes_labels(http: httpx.AsyncClient, services: World) -> None:
    page = (await http.get("/")).text
    for exp in (services.curve_a, services.curve_b, services.failed):
        assert exp.experiment_id in page
    assert "SUCCEEDED" in page and "FAILED" in page
    assert str(markupsafe.escape(XSS_LABEL)) in page
    assert XSS_LABEL not in page


@pytest.mark.parametrize(("query", "expected"), [
    ("state=FAILED", {"failed"}),
    ("state=SUCCEEDED&state=FAILED", {"curve_a", "curve_b", "failed"}),
    ("agent=JPE", {"curve_a", "curve_b"}),
    ("label=note%3D" + XSS_LABEL.replace("=", "%3D").replace("'", "%27"), {"curve_a"}),
    ("dataset=web-small&since=1h", {"curve_a", "curve_b", "failed"}),
    ("dataset=another", set()),
    ("since=2000-01-01", {"curve_a", "curve_b", "failed"}),
])
async def test_the_list_filters(http: httpx.AsyncClient, services: World, query: str, expected: set[str]) -> None:
    page = (await http.get(f"/?{query}")).text
    shown = {name for name in ("curve_a", "curve_b", "failed")
             if getattr(services, name).experiment_id in "".join(rows(page, "experiments"))}
    assert shown == expected


async def test_a_bad_filter_is_refused_naming_it(http: httpx.AsyncClient) -> None:
    reply = await http.get("/?since=yesterday-ish")
    assert reply.status_code == 400
    assert "since &#39;yesterday-ish&#39;" in reply.text or "since 'yesterday-ish'" in reply.text
    assert (await http.get("/?state=sleeping")).status_code == 400


@pytest.mark.parametrize("since", ["100000000000d", "9999999999w", "1" * 35 + "s"])
async def test_a_since_beyond_what_a_timestamp_holds_is_refused_naming_the_limit(http: httpx.AsyncClient,
                                                                                 services: World, since: str) -> None:
    for path in ("/", "/failures"):
        reply = await http.get(path, params={"since": since})
        assert reply.status_code == 400, (path, reply.text)
        assert "since" in reply.text and "9999-12-31" in reply.text
    # the CLI: a usage error (exit 2), not a traceback
    done = await asyncio.to_thread(CliRunner().invoke, app, [
        "--server", services.orchestrator.address, "errors", "--since", since])
    assert done.exit_code == 2 and "9999-12-31" in done.output, done.output
    assert not isinstance(done.exception, ValueError | OverflowError)


async def test_an_experiment_shows_points_images_sorted_and_labelled(http: httpx.AsyncClient,
                                                                     services: World) -> None:
    exp = services.curve_a
    page = (await http.get(f"/experiments/{exp.experiment_id}")).text
    points = rows(page, "points")
    assert len(points) == len(QUALITIES_A)
    assert [re.search(r"quality=(\d+)", r).group(1) for r in points] == [str(q) for q in QUALITIES_A]
    assert len(rows(page, "images")) == 2 * len(QUALITIES_A)
    assert "attempt 1 of" in page and exp.worker_id in page
    # sorted by PSNR, highest first: the highest quality first
    page = (await http.get(f"/experiments/{exp.experiment_id}?psort=psnr&pdesc=1")).text
    shown = [re.search(r"quality=(\d+)", r).group(1) for r in rows(page, "points")]
    assert shown == [str(q) for q in sorted(QUALITIES_A, reverse=True)]
    psnrs = [p.psnr_db for p in sorted(exp.result.points, key=lambda p: -p.psnr_db)]
    assert psnrs == sorted(psnrs, reverse=True)
    # the image table sorted by bytes, ascending
    page = (await http.get(f"/experiments/{exp.experiment_id}?isort=bytes")).text
    sizes = [int(re.findall(r"<td>(.*?)</td>", r)[2]) for r in rows(page, "images")]
    assert sizes == sorted(sizes) and len(sizes) == 8


async def test_the_point_table_has_the_figures_of_codecbench_show(http: httpx.AsyncClient, services: World) -> None:
    exp = services.curve_a
    page = (await http.get(f"/experiments/{exp.experiment_id}")).text
    head = page.split('id="points"', 1)[1].split("</thead>", 1)[0]
    titles = [html.unescape(re.sub(r"<[^>]+>", "", t)).strip(" \n▲▼") for t in re.findall(r"<th.*?</th>", head, re.S)]
    # the CLI's per-point columns, in its order (its table's header; "params" is "point" here)
    cli = [str(c.header) for c in views.results_table([exp]).columns]
    assert titles == ["point", *cli[1:]]
    for point, row in zip(exp.result.points, rows(page, "points"), strict=True):
        cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        assert cells[6] == f"{point.pooled_psnr_db:.2f}" and cells[8] == f"{point.encode_ms_median:.1f}"
        assert cells[10] == f"{point.decode_ms_median:.1f}" and cells[11] == views.lossless_cell(point)
    assert views.RESULTS_CAPTION.split("\n")[0] in page


async def test_show_and_run_say_which_reconstructions_are_kept(services: World) -> None:
    exp = services.curve_a
    shown = await asyncio.to_thread(CliRunner().invoke, app, [
        "--server", services.orchestrator.address, "show", exp.experiment_id])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "reconstructions: 1, 1, 1, 1 kept per point of the first 1 image(s) of each point (4 in all)" in text
    assert "codecbench web" in text
    other = await asyncio.to_thread(CliRunner().invoke, app, [
        "--server", services.orchestrator.address, "show", services.curve_b.experiment_id])
    assert other.exit_code == 0 and "reconstructions:" not in other.output


async def test_a_failed_experiment_shows_its_typed_error_as_text(http: httpx.AsyncClient, services: World) -> None:
    page = (await http.get(f"/experiments/{services.failed.experiment_id}")).text
    assert "AGENT_EXCEPTION" in page and "ValueError" in page
    error = services.failed.error
    assert error.frames and f"{error.frames[-1].file}:{error.frames[-1].line}" in page
    assert str(markupsafe.escape(XSS_ERROR)) in page
    assert XSS_ERROR not in page


async def test_compare_shows_the_chart_data_and_the_clis_footnotes(http: httpx.AsyncClient, services: World) -> None:
    a, b = services.curve_a, services.curve_b
    reply = await http.get("/compare", params={"baseline": a.experiment_id, "candidate": b.experiment_id})
    assert reply.status_code == 200
    page = reply.text
    curves = [analysis.Curve.from_experiment(e) for e in (a, b)]
    footnoted, notes = analysis.footnoted_bd_rates(analysis.bd_rate_table(curves, curves[0]))
    for row in footnoted:
        for cell in row.cells.values():
            assert str(markupsafe.escape(cell.text)) in page
    assert notes, "two 4-point jpeg curves over different qualities overlap partly: a footnote is expected"
    listed = re.findall(r'<li id="note-(\d+)" value="\d+">(.*?)</li>', page, flags=re.S)
    assert [html.unescape(text) for _, text in listed] == notes
    data = json.loads(html.unescape(page.split('id="rd-data">', 1)[1].split("</script>", 1)[0]))
    assert [t["text"] for t in data["psnr"]["traces"]] == [a.experiment_id, b.experiment_id]
    assert len(data["ms_ssim"]["traces"]) == 2
    assert data["psnr"]["traces"][0]["x"] == sorted(p.bpp for p in a.result.points)


def test_chart_names_reach_plotly_as_text_not_markup() -> None:
    hostile = '<a href="https://evil.example/">x</a> & <b>'
    chart = analysis.RdChart(pooled=False, notes=(), series=(
        analysis.RdSeries(label=hostile, experiment_id="exp-<i>1</i>", psnr=((0.5, 30.0),), ms_ssim=((0.5, 0.9),)),))
    data = present.chart_data(chart)
    for metric in ("psnr", "ms_ssim"):
        (trace,) = data[metric]["traces"]
        # Plotly turns the entities back into the characters, drawn as text
        assert trace["name"] == '&lt;a href="https://evil.example/"&gt;x&lt;/a&gt; &amp; &lt;b&gt;'
        assert trace["text"] == "exp-&lt;i&gt;1&lt;/i&gt;"
        assert html.unescape(trace["name"]) == hostile
    assert "<" not in json.dumps(data) and ">" not in json.dumps(data)


async def test_compare_says_why_an_experiment_has_no_curve(http: httpx.AsyncClient, services: World) -> None:
    reply = await http.get("/compare", params={"baseline": services.curve_a.experiment_id,
                                               "candidate": services.failed.experiment_id})
    assert reply.status_code == 400
    assert f"experiment {services.failed.experiment_id}" in reply.text and "no results" in reply.text
    choose = await http.get("/compare")
    assert choose.status_code == 200 and services.curve_b.experiment_id in choose.text


async def test_failures_are_grouped_with_an_example(http: httpx.AsyncClient, services: World) -> None:
    page = (await http.get("/failures")).text
    groups = rows(page, "groups")
    assert len(groups) == 1
    assert "AGENT_EXCEPTION" in groups[0] and services.failed.experiment_id in groups[0]
    assert f"codec.py:{services.failed.error.frames[-1].line}" in groups[0]
    assert XSS_ERROR not in page
    assert "1 failed experiment(s)" in page


async def test_workers_and_unknown_pages(http: httpx.AsyncClient, services: World) -> None:
    page = (await http.get("/workers")).text
    assert len(rows(page, "workers")) == 1 and "READY" in page
    missing = await http.get("/experiments/exp-0000000000000000")
    assert missing.status_code == 404 and "exp-0000000000000000" in missing.text
    assert (await http.get("/vendor/plotly.min.js")).status_code == 200


async def test_huge_indexes_in_a_path_are_no_page(http: httpx.AsyncClient, services: World) -> None:
    base = f"/experiments/{services.curve_a.experiment_id}/points"
    assert (await http.get(f"{base}/0/images/0/reconstruction.png")).status_code == 200
    for point, image in [("9" * 5000, "0"), ("0", "9" * 5000), ("1" + "0" * 9, "0"), ("0", "\u00b2")]:
        for leaf in ("reconstruction.png", "original"):
            assert (await http.get(f"{base}/{point}/images/{image}/{leaf}")).status_code == 404


async def test_no_page_refers_to_another_host(http: httpx.AsyncClient, services: World) -> None:
    pages = ["/", "/compare", "/failures", "/workers",
             f"/compare?baseline={services.curve_a.experiment_id}&candidate={services.curve_b.experiment_id}",
             *(f"/experiments/{e.experiment_id}" for e in (services.curve_a, services.curve_b, services.failed))]
    base = str(http.base_url)
    seen = 0
    for path in pages:
        reply = await http.get(path)
        assert "default-src 'self'" in reply.headers["content-security-policy"]
        assert reply.headers["cross-origin-resource-policy"] == "same-origin"
        for url in links(reply.text):
            seen += 1
            where = urlsplit(urljoin(base, url))
            assert where.scheme == "http" and where.hostname == "127.0.0.1", f"{path} refers to {url}"
        assert "//" not in re.sub(r"https?://127\.0\.0\.1", "", reply.text.split("<body>", 1)[0])
    assert seen > 20


def sse_events(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        out.append(fields)
    return out


async def test_the_event_stream_resumes_after_the_last_event_id(http: httpx.AsyncClient, services: World) -> None:
    exp = services.curve_b
    whole = sse_events((await http.get("/events", params={"id": exp.experiment_id})).text)
    assert whole[-1]["event"] == "end"
    sequences = [json.loads(e["data"])["sequence"] for e in whole[:-1]]
    assert sequences == list(range(1, exp.last_sequence + 1))
    assert json.loads(whole[-2]["data"])["state"] == "SUCCEEDED"
    middle = whole[len(whole) // 2]
    resumed = sse_events((await http.get("/events", params={"id": exp.experiment_id},
                                         headers={"Last-Event-ID": middle["id"]})).text)
    after = int(middle["id"].split("=")[1])
    assert [json.loads(e["data"])["sequence"] for e in resumed[:-1]] == list(range(after + 1, exp.last_sequence + 1))
    # a stream of two experiments carries both sequences in each id
    both = sse_events((await http.get("/events", params=[("id", exp.experiment_id),
                                                         ("id", services.failed.experiment_id)])).text)
    assert live.parse_last_event_id(both[-2]["id"]) == {exp.experiment_id: exp.last_sequence,
                                                       services.failed.experiment_id: services.failed.last_sequence}


async def test_the_event_stream_refuses_bad_ids(http: httpx.AsyncClient) -> None:
    assert (await http.get("/events")).status_code == 400
    assert (await http.get("/events", params={"id": "<script>"})).status_code == 400
    assert live.parse_last_event_id("exp-ab=3,junk,exp-cd=x,=4") == {"exp-ab": 3}


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b2", "9" * 5000, str(2**63), "+3", " 4"])
async def test_a_bad_last_event_id_is_ignored(http: httpx.AsyncClient, services: World, value: str) -> None:
    exp = services.curve_b
    assert live.parse_last_event_id(f"{exp.experiment_id}={value}") == {}
    reply = await http.get("/events", params={"id": exp.experiment_id},
                           headers={"Last-Event-ID": f"{exp.experiment_id}={value}".encode()})
    assert reply.status_code == 200
    events = sse_events(reply.text)  # the whole stream, as without a Last-Event-ID
    assert [json.loads(e["data"])["sequence"] for e in events[:-1]] == list(range(1, exp.last_sequence + 1))
    assert live.parse_last_event_id(f"{exp.experiment_id}={2**63 - 1}") == {exp.experiment_id: 2**63 - 1}


async def test_a_stream_that_fails_says_so(services: World) -> None:
    # a sequence that WatchExperiment cannot carry (int64): the request cannot even be built
    queue: asyncio.Queue[tuple[str, int, dict[str, object]] | None] = asyncio.Queue()
    await live._follow(services.client, services.curve_b.experiment_id, 2**63, queue)
    first = await queue.get()
    assert first is not None and "problem" in first[2] and "failed" in str(first[2]["problem"])
    assert await queue.get() is None


async def test_kept_reconstructions_are_the_decoded_images_beside_their_originals(http: httpx.AsyncClient,
                                                                                   services: World) -> None:
    exp = services.curve_a
    assert exp.keep_reconstructions == 1
    kept = [(p.point_index, i) for p in exp.result.points for i in p.images if i.HasField("reconstruction")]
    assert [(point, image.image_index) for point, image in kept] == [(p, 0) for p in range(len(QUALITIES_A))]
    page = (await http.get(f"/experiments/{exp.experiment_id}")).text
    assert page.count('<figure class="pair"') == len(QUALITIES_A)
    for point, image in kept:
        base = f"/experiments/{exp.experiment_id}/points/{point}/images/{image.image_index}"
        assert f"{base}/reconstruction.png" in page and f"{base}/original" in page
        decoded = await http.get(f"{base}/reconstruction.png")
        original = await http.get(f"{base}/original")
        assert decoded.headers["content-type"] == "image/png" and original.headers["content-type"] == "image/png"
        a = np.asarray(Image.open(io.BytesIO(original.content)).convert("RGB"), dtype=np.float64)
        b = np.asarray(Image.open(io.BytesIO(decoded.content)), dtype=np.float64)
        # the PNG holds exactly the pixels the worker measured: the same PSNR, recomputed here
        assert 10 * math.log10(255**2 / np.mean((a - b) ** 2)) == pytest.approx(image.metrics.psnr_db, abs=1e-9)
    assert (await http.get(f"/experiments/{exp.experiment_id}/points/0/images/1/reconstruction.png")).status_code == 404


async def test_reconstructions_are_readable_by_their_owner_only(services: World) -> None:
    image = services.curve_a.result.points[0].images[0]
    async with Client(services.orchestrator.address, token=services.alice_token) as alice, \
            Client(services.orchestrator.address, token=services.bob_token) as bob:
        assert (await alice.read_blob(image.reconstruction.sha256)).startswith(b"\x89PNG")
        with pytest.raises(errors.NotFound):
            await bob.read_blob(image.reconstruction.sha256)


async def test_keep_reconstructions_is_bounded(services: World) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        await services.client.submit(AGENTS / "jpeg", services.dataset, keep_reconstructions=17)
    assert info.value.field == "keep_reconstructions" and str(validation.MAX_KEEP_RECONSTRUCTIONS) in str(info.value)
    with pytest.raises(errors.InvalidArgument):
        await services.client.submit(AGENTS / "jpeg", services.dataset, keep_reconstructions=-1)
    done = await asyncio.to_thread(CliRunner().invoke, app, [
        "--server", services.orchestrator.address, "run", str(AGENTS / "jpeg"), "--dataset", services.dataset,
        "--keep-reconstructions", "17", "--detach"])
    assert done.exit_code == 2 and "keep_reconstructions" in done.output and "16" in done.output


NOISE_AGENT = '''"""Decodes to fresh uniform noise: PNGs that never compress or deduplicate."""
import torch


def encode(image, device, **params):
    return ("%d,%d" % tuple(image.shape[1:])).encode()


def decode(bitstream, device, **params):
    height, width = map(int, bitstream.decode().split(","))
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
'''


async def test_kept_reconstructions_have_a_byte_budget_per_experiment(services: World) -> None:
    agent = services.root / "noise_agent"
    agent.mkdir(exist_ok=True)
    (agent / "codec.py").write_text(NOISE_AGENT)
    scheduler = services.orchestrator.scheduler
    # a noise PNG of a 176x176 image is ~93 KB: the budget holds one of them, not two
    scheduler.reconstruction_budget_bytes = 150_000
    try:
        submitted = await services.client.submit(agent, services.dataset, [{"p": i} for i in range(3)],
                                                 keep_reconstructions=2)
        done = await services.client.wait(submitted.experiment_id)
    finally:
        scheduler.reconstruction_budget_bytes = RECONSTRUCTION_BUDGET_BYTES
    assert done.state == states.SUCCEEDED, done
    kept = [i.reconstruction for p in done.result.points for i in p.images if i.HasField("reconstruction")]
    assert len(kept) == 1 and 0 < kept[0].size_bytes <= 150_000
    events = [e async for e in services.client.watch(done.experiment_id)]
    said = [e.log.text for e in events if e.WhichOneof("event") == "log" and "not kept" in e.log.text]
    assert len(said) == 3 * 2 - 1 and all("150000 bytes" in t for t in said), said
    assert scheduler.kept_bytes.get(done.experiment_id) is None  # forgotten once it ended
    assert RECONSTRUCTION_BUDGET_BYTES == 256 * 2**20


async def test_codecbench_web_prints_a_login_url_and_serves_until_stopped(services: World) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codecbench.cli", "--server", services.orchestrator.address, "web", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert process.stdout is not None
    printed: list[str] = []

    async def login_line() -> str:
        while not (printed and "/login?code=" in printed[-1]):
            line = (await process.stdout.readline()).decode()
            assert line, f"codecbench web exited before printing its login URL: {printed}"
            printed.append(line)
        return printed[-1].strip()

    try:
        url = await asyncio.wait_for(login_line(), timeout=60)
        where = urlsplit(url)
        assert where.hostname == "127.0.0.1" and where.port and where.port > 0  # --port 0: the port it got
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{where.port}", timeout=60) as http:
            assert (await http.get("/")).status_code == 401
            assert (await http.get(url)).status_code == 303
            assert services.failed.experiment_id in (await http.get("/")).text
    finally:
        process.terminate()
        rest, _ = await process.communicate()
    output = "".join(printed) + rest.decode()
    # uvicorn shuts down gracefully, then ends by the signal it was sent (as a process stopped by it)
    assert process.returncode in (0, -signal.SIGTERM), output
    assert f"http://127.0.0.1:{where.port}/" in output and "Traceback" not in output


# --- login and sessions -------------------------------------------------------------------------


def _set_cookie(reply: httpx.Response) -> str:
    cookies = [v for k, v in reply.headers.multi_items() if k == "set-cookie"]
    assert len(cookies) == 1, cookies
    return cookies[0]


def _kept_image(services: World) -> str:
    return f"/experiments/{services.curve_a.experiment_id}/points/0/images/0"


async def test_without_a_session_nothing_but_the_login_page_and_assets(view: tuple[Starlette, str],
                                                                         services: World) -> None:
    _, url = view
    ids = [e.experiment_id for e in (services.curve_a, services.curve_b, services.failed)]
    pages = ["/", "/compare", "/failures", "/workers", *(f"/experiments/{i}" for i in ids),
             f"/compare?baseline={ids[0]}&candidate={ids[1]}", "/nowhere"]
    data = [f"/events?id={ids[0]}", f"{_kept_image(services)}/reconstruction.png", f"{_kept_image(services)}/original"]
    async with httpx.AsyncClient(base_url=url) as stranger:
        for path in pages:  # a browser navigating is sent to the login page
            reply = await stranger.get(path, headers={"Accept": "text/html"})
            assert (reply.status_code, reply.headers.get("location")) == (303, "/login"), path
            assert reply.content == b""
        for path in [*pages, *data]:  # anything else: 401, and nothing of anyone's
            reply = await stranger.get(path)
            assert reply.status_code == 401, path
            assert reply.text == "login required"
        assert (await stranger.post("/logout")).status_code == 401
        # a cookie the view never issued is no session
        stranger.cookies.set(sessions.COOKIE, "made-up")
        assert (await stranger.get("/")).status_code == 401
        login = await stranger.get("/login")
        assert login.status_code == 200 and 'name="token"' in login.text
        assert not any(i in login.text for i in ids)
        assert (await stranger.get("/static/app.css")).status_code == 200
        assert (await stranger.get("/vendor/plotly.min.js")).status_code == 200


async def test_a_one_time_code_logs_in_once_with_the_views_token(view: tuple[Starlette, str],
                                                                 services: World) -> None:
    app, url = view
    code_url = login_url(app, url)
    code = code_url.split("code=", 1)[1]
    async with httpx.AsyncClient(base_url=url) as first, httpx.AsyncClient(base_url=url) as second:
        reply = await first.get(code_url)
        assert reply.status_code == 303 and reply.headers["location"] == "/"  # the URL bar drops the code
        cookie = _set_cookie(reply)
        assert code not in cookie and TEST_ADMIN_TOKEN not in cookie
        assert services.curve_b.experiment_id in (await first.get("/")).text  # the admin's experiment
        again = await second.get(code_url)
        assert again.status_code == 401 and "set-cookie" not in again.headers
        assert "used already or has expired" in again.text and code not in again.text
        assert (await second.get("/")).status_code == 401
        assert (await first.get("/")).status_code == 200  # the first browser stays logged in


def test_a_login_code_expires() -> None:
    now = [1000.0]
    logins = sessions.Sessions("127.0.0.1:1", rpc.NO_TLS, "token", code_ttl_s=600, clock=lambda: now[0])
    early, late, wrong = logins.issue_code(), logins.issue_code(), "x" * 43
    assert len(early) >= 43 and early != late  # 256 random bits, URL-safe base64
    now[0] += 599
    assert logins.redeem_code(early) and not logins.redeem_code(early)
    now[0] += 1
    assert not logins.redeem_code(late)
    assert not logins.redeem_code(wrong)


async def test_an_expired_code_is_refused_by_the_view(services: World) -> None:
    app = web_app(services.orchestrator.address, login_code_ttl_s=0.0)
    async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
        reply = await http.get(login_url(app, url))
        assert reply.status_code == 401 and "set-cookie" not in reply.headers
        assert (await http.get("/")).status_code == 401


async def _log_in_with_token(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/login", data={"token": token}, headers={"Origin": str(http.base_url).rstrip("/")})


async def test_each_browser_session_uses_its_own_token(view: tuple[Starlette, str], services: World) -> None:
    _, url = view
    mine, admins = services.curve_a.experiment_id, services.curve_b.experiment_id
    async with httpx.AsyncClient(base_url=url, timeout=60) as alice, \
            httpx.AsyncClient(base_url=url, timeout=60) as bob:
        for http, token in ((alice, services.alice_token), (bob, services.bob_token)):
            reply = await _log_in_with_token(http, token)
            assert reply.status_code == 303 and reply.headers["location"] == "/"
            assert token not in _set_cookie(reply)
        assert alice.cookies[sessions.COOKIE] != bob.cookies[sessions.COOKIE]
        # both sessions at once, interleaved: each sees what its own token may see
        for _ in range(2):
            as_alice, as_bob = (await alice.get("/")).text, (await bob.get("/")).text
            assert mine in as_alice and admins not in as_alice
            assert mine not in as_bob and admins not in as_bob
            assert services.alice_token not in as_alice and services.bob_token not in as_bob
        assert (await alice.get(f"/experiments/{mine}")).status_code == 200
        # the orchestrator refuses another user's experiment (PERMISSION_DENIED), and so does the view
        assert (await bob.get(f"/experiments/{mine}")).status_code == 403
        assert (await alice.get(f"{_kept_image(services)}/reconstruction.png")).content.startswith(b"\x89PNG")
        assert (await bob.get(f"{_kept_image(services)}/reconstruction.png")).status_code == 403
        events = sse_events((await bob.get("/events", params={"id": mine})).text)
        assert "problem" in json.loads(events[0]["data"]) and events[-1]["event"] == "end"
        # logging out ends that browser's session only
        assert (await bob.post("/logout", headers={"Origin": url})).status_code == 303
        assert (await bob.get("/")).status_code == 401
        assert mine in (await alice.get("/")).text


async def test_a_refused_token_ends_the_session(services: World) -> None:
    app = web_app(services.orchestrator.address, token="not-a-token-the-orchestrator-knows")
    async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
        refused = await _log_in_with_token(http, "also-unknown")
        assert refused.status_code == 401 and "refused this token" in refused.text
        assert "set-cookie" not in refused.headers and "also-unknown" not in refused.text
        await log_in(http, app)  # a code logs in without asking the orchestrator; its first page does
        cookie = http.cookies[sessions.COOKIE]
        page = await http.get("/")
        assert page.status_code == 401 and 'name="token"' in page.text  # the login page
        assert f'{sessions.COOKIE}=""' in _set_cookie(page) and "Max-Age=0" in _set_cookie(page)
        http.cookies.set(sessions.COOKIE, cookie)  # the old cookie is no session any more
        assert (await http.get("/")).status_code == 401


async def test_another_host_name_is_refused(http: httpx.AsyncClient, services: World) -> None:
    for path in ("/", "/login", "/static/app.css"):  # DNS rebinding: evil.example resolving to 127.0.0.1
        reply = await http.get(path, headers={"Host": "evil.example"})
        assert reply.status_code == 400 and services.curve_b.experiment_id not in reply.text
    port = urlsplit(str(http.base_url)).port
    assert (await http.get("/", headers={"Host": f"localhost:{port}"})).status_code == 200


async def test_a_post_from_another_origin_is_refused(view: tuple[Starlette, str], services: World) -> None:
    app, url = view
    async with httpx.AsyncClient(base_url=url) as http:
        await log_in(http, app)
        for origin in ("http://evil.example", "null", url.replace("127.0.0.1", "localhost")):
            assert (await http.post("/logout", headers={"Origin": origin})).status_code == 403
            refused = await http.post("/login", data={"token": services.bob_token}, headers={"Origin": origin})
            assert refused.status_code == 403 and "set-cookie" not in refused.headers
        assert (await http.get("/")).status_code == 200  # still logged in
        assert (await http.post("/logout", headers={"Origin": url})).status_code == 303


async def test_the_session_cookie_flags(view: tuple[Starlette, str]) -> None:
    app, url = view
    async with httpx.AsyncClient(base_url=url) as http:
        cookie = _set_cookie(await log_in(http, app))
    flags = [f.strip().lower() for f in cookie.split(";")]
    name, value = cookie.split(";", 1)[0].split("=", 1)
    assert name == sessions.COOKIE and len(value) >= 43
    assert {"httponly", "samesite=strict", "path=/"} <= set(flags) and "secure" not in flags
    # served over TLS (the scheme the server saw), the cookie is Secure too
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://127.0.0.1") as tls:
        reply = await tls.get(f"/login?code={app.state.sessions.issue_code()}")
        assert "secure" in [f.strip().lower() for f in _set_cookie(reply).split(";")]
