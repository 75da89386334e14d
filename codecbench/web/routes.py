"""The web view's pages: experiments, one experiment, compare, failures, workers.

Each handler reads its query (filters, sorting, the compared experiments), asks the orchestrator
through the browser session's own :class:`codecbench.client.Client`
(:func:`codecbench.web.sessions.client`), and renders a template with what
:mod:`codecbench.web.present` and :mod:`codecbench.analysis` computed. Bad query values are answered
400 with the reason; refused requests (not found, not allowed) by the app's error pages.
"""

from __future__ import annotations

import builtins
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from codecbench import analysis, datasets, states
from codecbench.cli.parsing import UsageError, parse_labels, parse_since, parse_states
from codecbench.v1 import experiment_pb2, orchestrator_pb2
from codecbench.web import present, sessions

# The most experiments a list (and the compare page's choice) shows, newest first.
LIST_LIMIT = 200
# The failed experiments the failures page groups, newest first (as `codecbench errors --limit`).
FAILURES_LIMIT = 1000


class IndexConvertor(Convertor[int]):
    """A point or image index in a path (``{point_index:index}``): 1 to 9 ASCII digits, so a huge
    number is no route (404) instead of an int() over Python's digit limit (a 500)."""

    regex = "[0-9]{1,9}"

    def convert(self, value: str) -> int:
        """The matched digits as an int."""
        return int(value)

    def to_string(self, value: int) -> str:
        """An index as its path segment (for ``url_for``)."""
        return str(value)


register_url_convertor("index", IndexConvertor())


def _render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    response: Response = request.app.state.templates.TemplateResponse(request, template, context,
                                                                      status_code=status_code)
    return response


def _usage(exc: UsageError) -> HTTPException:
    # the CLI's messages name its options (--since); here they are the form's fields of the same names
    return HTTPException(400, str(exc).replace("--", ""))


async def experiments(request: Request) -> Response:
    """The experiment list, newest first, filtered by state, agent, label, dataset and creation date."""
    query = request.query_params
    chosen = present.ListFilter(
        states=tuple(s for s in query.getlist("state") if s), agent=query.get("agent", "").strip(),
        labels=tuple(v for v in query.getlist("label") if v.strip()), dataset=query.get("dataset", "").strip(),
        since=query.get("since", "").strip(),
    )
    try:
        wanted_states = parse_states(chosen.states)
        labels = parse_labels(chosen.labels)
        created_after = parse_since(chosen.since) if chosen.since else None
    except UsageError as exc:
        raise _usage(exc) from exc
    listed = await sessions.client(request).list(wanted_states, labels, LIST_LIMIT, created_after=created_after)
    shown = [e for e in listed if chosen.keep(e)]
    all_states = [states.state_name(s) for s in (states.QUEUED, states.RUNNING, states.SUCCEEDED, states.FAILED,
                                                 states.CANCELLED)]
    live = [e.experiment_id for e in shown if e.state not in states.TERMINAL_STATES]
    return _render(request, "experiments.html", {
        "experiments": shown, "filter": chosen, "all_states": all_states, "live_ids": live, "limit": LIST_LIMIT,
    })


async def experiment(request: Request) -> Response:
    """One experiment: parameters, worker, attempts, per-point and per-image tables (sorted by the
    ``psort``/``isort`` column, ``pdesc``/``idesc`` for descending), agent-reported values, its error."""
    exp = await sessions.client(request).get(request.path_params["experiment_id"])
    query = request.query_params
    points = present.sorted_table(present.POINT_COLUMNS, present.measured_points(exp), query.get("psort", "point"),
                                  query.get("pdesc") == "1")
    images = present.sorted_table(present.IMAGE_COLUMNS, present.image_rows(exp), query.get("isort", "point"),
                                  query.get("idesc") == "1")
    reported = [p for p in exp.result.points if p.HasField("agent_report")]
    return _render(request, "experiment.html", {
        "e": exp, "points": points, "images": images, "reported": reported,
        "kept": present.kept_reconstructions(exp),
        "live": exp.state not in states.TERMINAL_STATES, "query": dict(query),
    })


async def compare(request: Request) -> Response:
    """Pick a baseline and candidates; their RD chart (bpp vs PSNR and vs MS-SSIM) and the BD-rate
    table with the CLI's footnotes (:func:`codecbench.analysis.footnoted_bd_rates`)."""
    client = sessions.client(request)
    query = request.query_params
    baseline_id = query.get("baseline", "").strip()
    candidate_ids = [c for c in dict.fromkeys(query.getlist("candidate")) if c and c != baseline_id]
    allow_different = query.get("allow_different_datasets") == "1"
    succeeded = await client.list([states.SUCCEEDED], limit=LIST_LIMIT)
    context: dict[str, Any] = {"choices": succeeded, "baseline_id": baseline_id, "candidate_ids": candidate_ids,
                               "allow_different": allow_different, "problem": "", "rows": [], "notes": [],
                               "chart": None, "chart_notes": []}
    if not baseline_id:
        return _render(request, "compare.html", context)
    compared: builtins.list[orchestrator_pb2.Experiment] = [await client.get(i) for i in [baseline_id, *candidate_ids]]
    try:
        anchor, *others = [analysis.Curve.from_experiment(e) for e in compared]
        curves = [anchor, *others]
        rows = analysis.bd_rate_table(curves, anchor, allow_different_datasets=allow_different)
    except ValueError as exc:  # not succeeded, agent-reported only, or different datasets: say why
        context["problem"] = str(exc).replace("--allow-different-datasets", "\"allow different datasets\"")
        return _render(request, "compare.html", context, status_code=400)
    footnoted, notes = analysis.footnoted_bd_rates(rows)
    chart = analysis.rd_chart(curves)
    context.update(rows=footnoted, notes=notes, baseline=anchor, chart=present.chart_data(chart),
                   chart_notes=chart.notes, method=analysis.BD_METHOD.upper(),
                   copies=[e for e in compared if e.cached_from])
    return _render(request, "compare.html", context)


async def failures(request: Request) -> Response:
    """Failed experiments grouped by error kind and source location, with counts and an example
    each (:func:`codecbench.analysis.group_errors`, as ``codecbench errors``)."""
    since = request.query_params.get("since", "").strip()
    try:
        created_after = parse_since(since) if since else None
    except UsageError as exc:
        raise _usage(exc) from exc
    listed = await sessions.client(request).list([states.FAILED], limit=FAILURES_LIMIT, created_after=created_after)
    failed, copies = analysis.without_cached_copies(listed)
    return _render(request, "failures.html", {"groups": analysis.group_errors(failed), "failed": len(failed),
                                              "copies": copies, "since": since})


async def workers(request: Request) -> Response:
    """The registered workers: state, build, slots, devices, heartbeat (the orchestrator shows
    non-admins each worker without its address, build, host and pid)."""
    return _render(request, "workers.html", {"workers": await sessions.client(request).workers()})


def _image_result(exp: orchestrator_pb2.Experiment, point_index: int, image_index: int
                  ) -> experiment_pb2.ImageResult:
    for point in present.measured_points(exp):
        for image in point.images:
            if (image.point_index, image.image_index) == (point_index, image_index):
                return image
    raise HTTPException(404, f"{exp.experiment_id} has no image {image_index} at point {point_index}")


def _image(data: bytes) -> Response:
    # private: the bytes are the user's own (kept reconstructions, dataset images)
    return Response(data, media_type=present.image_type(data), headers={"Cache-Control": "private, max-age=3600"})


async def reconstruction(request: Request) -> Response:
    """A kept decoded image (PNG), read from the orchestrator's blobs with the user's token."""
    exp = await sessions.client(request).get(request.path_params["experiment_id"])
    image = _image_result(exp, request.path_params["point_index"], request.path_params["image_index"])
    if not image.HasField("reconstruction"):
        raise HTTPException(404, f"{exp.experiment_id} kept no reconstruction of {image.image_name}")
    return _image(await sessions.client(request).read_blob(image.reconstruction.sha256))


async def original(request: Request) -> Response:
    """A dataset image of an experiment, as uploaded (the built-in ``photos`` from this package)."""
    client = sessions.client(request)
    exp = await client.get(request.path_params["experiment_id"])
    image = _image_result(exp, request.path_params["point_index"], request.path_params["image_index"])
    dataset = next((d for d in await client.datasets() if d.name == exp.dataset), None)
    ref = next((i for i in dataset.images if i.name == image.image_name), None) if dataset is not None else None
    if dataset is None or ref is None:
        raise HTTPException(404, f"dataset {exp.dataset!r} has no image {image.image_name!r} now")
    if dataset.builtin:  # workers and this view resolve built-in images locally, by name
        return _image(dict(datasets.photo_files())[ref.name])
    return _image(await client.read_blob(ref.sha256))
