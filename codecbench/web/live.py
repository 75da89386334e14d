"""Live updates as server-sent events, fed by ``WatchExperiment``.

``GET /events?id=EXP&id=EXP...`` streams one ``experiment`` event per stored event of each named
experiment, interleaved, then ``end`` once every one has reached its terminal event. Each event's
data is JSON: ``experiment_id``, ``sequence``, ``state`` (after the event), ``progress`` (where the
run is, or the outcome once terminal) and ``line`` (the event as ``codecbench watch`` prints it).

Resuming: each event's SSE ``id`` is the last sequence seen of every experiment of the stream
(``exp-a=12,exp-b=3``). A browser that reconnects sends it back as ``Last-Event-ID``; the stream
then resumes each experiment after its sequence (``WatchExperiment``'s ``after_sequence``), so
nothing is missed or shown twice. The client underneath also resumes a broken gRPC stream.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from codecbench import errors, states
from codecbench.cli.views import event_text
from codecbench.client import Client
from codecbench.v1 import experiment_pb2
from codecbench.web import present, sessions

# The most experiments one stream follows (a list page shows at most 200, few of them live).
MAX_WATCHED = 200
_ID = re.compile(r"^exp-[0-9a-f]{1,64}$")
# A sequence as a resuming browser sends it back: ASCII digits only (str.isdigit would take
# superscripts, which int() refuses) and at most 19 of them (no huge-number parsing).
_SEQUENCE = re.compile(r"[0-9]{1,19}")
# The largest sequence WatchExperiment's after_sequence (int64) carries; a larger one is ignored.
MAX_SEQUENCE = 2**63 - 1


def parse_last_event_id(text: str) -> dict[str, int]:
    """``"exp-a=12,exp-b=3"`` -> ``{"exp-a": 12, "exp-b": 3}``; malformed items are ignored (a
    browser sends back whatever id it last saw, and a bad one must not break the stream): a value
    that is not 1 to 19 ASCII digits, or is above :data:`MAX_SEQUENCE`."""
    seen = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if sep and _ID.match(key) and _SEQUENCE.fullmatch(value) and int(value) <= MAX_SEQUENCE:
            seen[key] = int(value)
    return seen


def format_event_id(seen: Mapping[str, int]) -> str:
    """The SSE id for the sequences seen so far (the inverse of :func:`parse_last_event_id`)."""
    return ",".join(f"{k}={v}" for k, v in seen.items())


def _progress(event: experiment_pb2.ExperimentEvent) -> str:
    kind = event.WhichOneof("event")
    if kind == "progress":
        p = event.progress
        return (f"point {p.point_index + 1}/{p.point_count}, image {p.image_index + 1}/{p.image_count}"
                f" ({errors.phase_name(p.phase)})")
    if kind == "image_result":
        r = event.image_result
        return f"point {r.point_index + 1}: image {r.image_index + 1} done"
    return ""


def _sse(event: str, data: object, event_id: str = "") -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


async def _follow(client: Client, experiment_id: str, after: int,
                  queue: asyncio.Queue[tuple[str, int, dict[str, object]] | None]) -> None:
    """Puts each event of one experiment on ``queue`` as (id, sequence, data), then None."""
    try:
        async for event in client.watch(experiment_id, after_sequence=after):
            data: dict[str, object] = {"experiment_id": experiment_id, "sequence": event.sequence,
                                       "line": event_text(event).plain, "progress": _progress(event)}
            if event.WhichOneof("event") == "state_change":
                data["state"] = states.state_name(event.state_change.state)
            if states.is_terminal_event(event):
                exp = await client.get(experiment_id)  # FAILED or CANCELLED is the stored state's to say
                data.update(state=states.state_name(exp.state), progress=present.summary(exp))
            await queue.put((experiment_id, event.sequence, data))
    except errors.CodecbenchError as exc:  # not found, not allowed, unreachable: said on the page, not raised
        await queue.put((experiment_id, after, {"experiment_id": experiment_id, "problem": str(exc)}))
    except Exception as exc:  # noqa: BLE001 - anything else too: a stream that just ends would hide it
        await queue.put((experiment_id, after, {"experiment_id": experiment_id,
                                                "problem": f"the view failed: {type(exc).__name__}: {exc}"}))
    finally:
        await queue.put(None)


async def events(request: Request) -> Response:
    """The event stream of the experiments named by ``id`` query parameters (see the module docstring).

    Raises:
        HTTPException: 400 when no id, more than :data:`MAX_WATCHED`, or a malformed one is given.
    """
    ids = list(dict.fromkeys(request.query_params.getlist("id")))
    if not ids or len(ids) > MAX_WATCHED or not all(_ID.match(i) for i in ids):
        raise HTTPException(400, f"id: 1 to {MAX_WATCHED} experiment ids (exp- and hex digits) are required")
    resumed = parse_last_event_id(request.headers.get("last-event-id", ""))
    seen = {i: resumed.get(i, 0) for i in ids}
    client = sessions.client(request)

    async def stream() -> AsyncIterator[str]:
        queue: asyncio.Queue[tuple[str, int, dict[str, object]] | None] = asyncio.Queue()
        tasks = [asyncio.create_task(_follow(client, i, seen[i], queue)) for i in ids]
        try:
            remaining = len(tasks)
            while remaining:
                item = await queue.get()
                if item is None:
                    remaining -= 1
                    continue
                experiment_id, sequence, data = item
                seen[experiment_id] = sequence
                yield _sse("experiment", data, format_event_id(seen))
            yield _sse("end", {})
        finally:  # the browser went away (or the stream ended): stop watching
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
