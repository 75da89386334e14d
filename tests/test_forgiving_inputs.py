"""Inputs other-language clients get wrong (issue 19): forgiving where it is harmless, strict and
clear where it is not. JSON and JavaScript have one number type, so ``level: 9`` arrives as a
float_value; hex digests come in upper case; a Value with no kind set is easy to build by accident.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import grpc
import pytest
import torch
from helpers import agent_bundle
from helpers.worker import error_of, request, result_of, run

from codecbench import bundles, errors, tensors, validation, values
from codecbench.v1 import errors_pb2, types_pb2, worker_pb2
from sandbox import contracts

K = errors_pb2


def _check(fn, params: dict) -> tuple[dict, tuple[str, ...]]:
    return contracts.check_param_types(inspect.signature(fn), params, "encode", types_pb2.PHASE_LOAD, "codec.py:1")


def test_an_integral_float_for_an_int_default_is_converted_with_a_note() -> None:
    def encode(image, device, level=6, *, strength: int = 2) -> None: ...

    checked, notes = _check(encode, {"level": 9.0, "strength": 3.0})
    assert checked == {"level": 9, "strength": 3}
    assert all(type(v) is int for v in checked.values())
    assert len(notes) == 2 and "level=9.0 (float) converted to int 9" in notes[0] and "default 6" in notes[0]


@pytest.mark.parametrize(
    ("value", "given"),
    [(9.5, "the float 9.5"), ("9", "the str '9'"), (True, "the bool True"), (None, "the NoneType None"),
     ([9], "the list [9]")],
)
def test_another_type_for_an_int_default_is_a_signature_mismatch_naming_both(value, given) -> None:
    def encode(image, device, level=6) -> None: ...

    with pytest.raises(errors.SignatureMismatch) as info:
        _check(encode, {"level": value})
    message = str(info.value)
    # a new user's finding: "expected: scale: int; got: scale: float = 2.5" read oddly
    assert message == f"parameter level of encode must be an int (default 6), got {given}"
    assert info.value.error.expected == "level: an int"
    assert info.value.error.actual == f"level: {given}"
    assert info.value.error.phase == types_pb2.PHASE_LOAD


def test_annotations_declare_the_type_when_there_is_no_default() -> None:
    # This module has ``from __future__ import annotations``: the annotations are the strings "int", "str".
    def as_strings(image, device, *, level: int, mode: str) -> None: ...

    checked = _check(as_strings, {"level": 4.0, "mode": "fast"})[0]
    assert checked == {"level": 4, "mode": "fast"} and type(checked["level"]) is int
    with pytest.raises(errors.SignatureMismatch,
                       match=r"mode of encode must be a str \(annotation str\), got the int 1"):
        _check(as_strings, {"level": 4, "mode": 1})


def test_floats_take_ints_and_undeclared_types_pass_unchecked() -> None:
    def encode(image, device, scale=0.5, flag=False, anything=None, **extra: object) -> None: ...

    params = {"scale": 2, "flag": True, "anything": [1, "x"], "extra": 1.5}
    assert _check(encode, params) == (params, ())
    with pytest.raises(errors.SignatureMismatch,
                       match=r"flag of encode must be a bool \(default False\), got the int 1"):
        _check(encode, {"flag": 1})


@pytest.mark.timeout(120)
async def test_a_float_level_runs_zlib_as_an_int_and_says_so(worker_stub) -> None:
    """The issue's case: ``level`` sent as float_value 9 to zlib_lossless (``level: int = 6``) once
    failed inside the agent with "'float' object cannot be interpreted as an integer"."""
    events, terminal = await run(worker_stub, request("zlib_lossless", points=[{"level": 9.0}]))
    assert result_of(terminal).points[0].lossless
    notes = [e.log.text for e in events if e.HasField("log") and "converted to int 9" in e.log.text]
    assert len(notes) == 1, [e.log.text for e in events if e.HasField("log")]
    assert notes[0].startswith("codecbench: parameter level=9.0 (float)")


@pytest.mark.timeout(120)
async def test_a_fractional_level_fails_before_any_image_with_both_types_named(worker_stub) -> None:
    events, terminal = await run(worker_stub, request("zlib_lossless", points=[{"level": 9.5}]))
    error = error_of(terminal)
    assert error.kind == K.ERROR_KIND_SIGNATURE_MISMATCH
    assert error.phase == types_pb2.PHASE_LOAD
    assert "must be an int (default 6), got the float 9.5" in error.message
    assert (error.expected, error.actual) == ("level: an int", "level: the float 9.5")
    assert not any(e.HasField("image_result") for e in events)
    assert not any(e.HasField("progress") and e.progress.phase == types_pb2.PHASE_ENCODE for e in events)


def test_a_value_with_no_kind_is_invalid_at_any_depth() -> None:
    top = types_pb2.ParameterPoint(params={"level": types_pb2.Value()})
    with pytest.raises(errors.InvalidArgument) as info:
        validation.check_point(top, "points[0]")
    assert info.value.field == "points[0].params['level']" and "no kind set" in info.value.problem
    nested = types_pb2.ParameterPoint(params={"levels": types_pb2.Value(list_value=types_pb2.ValueList(
        values=[types_pb2.Value(int_value=1), types_pb2.Value()]))})
    with pytest.raises(errors.InvalidArgument, match=r"no kind set \(at \[1\]\)"):
        validation.check_point(nested, "points[0]")
    # null_value is the way to send None, and it stays accepted.
    validation.check_point(types_pb2.ParameterPoint(params={"x": types_pb2.Value(null_value=True)}))


@pytest.mark.timeout(60)
async def test_the_worker_refuses_a_value_with_no_kind_before_running_the_agent(worker_stub) -> None:
    params = types_pb2.ParameterPoint(params={"level": types_pb2.Value(map_value=types_pb2.ValueMap(
        entries=[types_pb2.ValueMapEntry(key="inner")]))})
    call = worker_stub.Encode(worker_pb2.EncodeRequest(
        agent=agent_bundle("zlib_lossless"), params=params,
        image=tensors.from_torch(torch.zeros(3, 4, 4, dtype=torch.uint8)),
    ))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "params.params['level']" in info.value.details() and "no kind set (at ['inner'])" in info.value.details()


def test_an_upper_case_sha256_is_refused_saying_lower_case_hex() -> None:
    bundle = agent_bundle("zlib_lossless")
    bundle.files[0].sha256 = bundle.files[0].sha256.upper()
    with pytest.raises(errors.InvalidArgument) as info:
        bundles.validate(bundle)
    assert info.value.field == "agent.files[0].sha256"
    assert "must be lower-case hex" in info.value.problem and "does not match" not in info.value.problem
    # Left out, it is computed from the content.
    bundle.files[0].sha256 = ""
    bundles.validate(bundle)
    # A digest that is wrong in any case still says so.
    bundle.files[0].sha256 = "AB" * 32
    with pytest.raises(errors.InvalidArgument, match="does not match the content"):
        bundles.validate(bundle)



def test_parameter_names_must_be_nfkc_normalised_and_variants_of_reserved_names_are_reserved() -> None:
    # Old: both passed submit and could never bind (Python normalises the agent's own names).
    for name, said in (("\uff51uality", "is not NFKC-normalised: Python names the parameter 'quality'"),
                       ("\uff44evice", "is a variant of the reserved name 'device'")):
        point = values.params_from_python({name: 3})
        with pytest.raises(errors.InvalidArgument) as raised:
            validation.check_point(point, "points[0]")
        assert raised.value.field == f"points[0].params[{name!r}]" and said in str(raised.value)
    validation.check_point(values.params_from_python({"quality": 3, "qualité": 2}), "points[0]")


@pytest.mark.timeout(120)
async def test_every_point_is_checked_at_load_before_the_first_image(worker_stub) -> None:
    """A new user's finding: ``--param quality=90,high`` coded every image of point 0, then failed
    on point 1; the README promises arguments are checked before any image is processed."""
    events, terminal = await run(worker_stub, request("jpeg", points=[{"quality": 90}, {"quality": "high"}]))
    error = error_of(terminal)
    assert error.kind == K.ERROR_KIND_SIGNATURE_MISMATCH and error.phase == types_pb2.PHASE_LOAD
    assert error.point_index == 1 and "quality" in error.message and "the str 'high'" in error.message
    assert not any(e.HasField("image_result") for e in events)
    assert not any(e.HasField("progress") and e.progress.phase == types_pb2.PHASE_ENCODE for e in events)


def test_a_misspelt_parameter_name_suggests_the_declared_one() -> None:
    """A new user's finding: ``--param scal=2`` said only "unexpected keyword argument"."""
    def encode(image, device, scale=2, quality=50) -> None: ...

    slots = [contracts.Slot("image", contracts.DATA, any_name=True), contracts.Slot("device", "cpu")]
    with pytest.raises(errors.SignatureMismatch) as info:
        contracts.bind_call(encode, "encode", "encode(image, device, **params)", Path("."), types_pb2.PHASE_LOAD,
                            slots, params={"scal": 2})
    assert "unexpected keyword argument 'scal' (did you mean 'scale'?)" in str(info.value)
    with pytest.raises(errors.SignatureMismatch) as info:
        contracts.bind_call(encode, "encode", "encode(image, device, **params)", Path("."), types_pb2.PHASE_LOAD,
                            slots, params={"zzz": 2})
    assert "did you mean" not in str(info.value)
