"""Agent-reported values (seed contract) and the size of a whole result are bounded (red-team H1):
checked on the serialized dict before any conversion, with the limit named in the error."""

from __future__ import annotations

import pytest

from codecbench import errors, values
from codecbench.v1 import types_pb2
from worker_svc import executor


def test_scalar_entries_are_reported_typed_and_the_rest_named() -> None:
    data = values.to_value({"bits": 12, "ratio": 0.5, "flag": True, "note": "x", "raw": b"\0", "sizes": [1, 2]})
    report = executor.agent_report(data)
    assert {k: v.WhichOneof("kind") for k, v in report.values.items()} == {
        "bits": "int_value", "ratio": "float_value", "flag": "bool_value", "note": "string_value"}
    assert {k: values.from_value(v) for k, v in report.values.items()} == {
        "bits": 12, "ratio": 0.5, "flag": True, "note": "x"}
    assert sorted(report.ignored_keys) == ["raw", "sizes"]


@pytest.mark.parametrize(
    ("report", "actual"),
    [
        ({f"k{i}": float(i) for i in range(executor.MAX_REPORTED_ENTRIES + 1)}, "257 entries"),
        ({"blob": b"\0" * executor.MAX_REPORTED_BYTES}, "1 entries, 65558 bytes"),
    ],
    ids=["too-many-entries", "too-many-bytes"],
)
def test_a_report_over_the_limits_is_invalid_output_naming_them(report: dict, actual: str) -> None:
    with pytest.raises(errors.InvalidOutput) as raised:
        executor.agent_report(values.to_value(report))
    error = raised.value.error
    assert error.actual == actual and error.phase == types_pb2.PHASE_DECODE and not error.retryable
    assert error.expected == "at most 256 entries and 65536 bytes besides the reconstruction"


def test_a_report_at_the_limits_is_accepted() -> None:
    report = {f"k{i}": float(i) for i in range(executor.MAX_REPORTED_ENTRIES)}
    assert values.to_value(report).ByteSize() <= executor.MAX_REPORTED_BYTES
    assert len(executor.agent_report(values.to_value(report)).values) == executor.MAX_REPORTED_ENTRIES


def test_a_result_over_half_the_message_limit_ends_the_run_without_retry() -> None:
    position = executor._Position()
    executor._count_result(position, executor.MAX_RESULT_BYTES)  # exactly at the limit: fine
    with pytest.raises(errors.InternalError) as raised:
        executor._count_result(position, 1)
    assert not raised.value.retryable and str(executor.MAX_RESULT_BYTES) in str(raised.value)
