"""Arguments are bound from the agent's real signature, for every kind of parameter (issue 13).

A property test generates signatures of every legal shape (positional-only, positional-or-keyword,
keyword-only, defaults, ``*args``, ``**kwargs``) as real ``def`` source, binds the contract's call
in-process and checks that every argument arrives exactly once, under its name wherever the agent
named it; a signature that cannot receive the arguments is a SIGNATURE_MISMATCH naming expected and
actual. A few real sandbox runs follow in tests/test_agent_shapes.py.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codecbench import errors
from codecbench.v1 import types_pb2
from sandbox import contracts

P = inspect.Parameter
DEFAULT = "<default>"  # the default of every generated parameter that has one
IMAGE = "<the image>"
DEVICE = "cpu"


@dataclass(frozen=True)
class Contract:
    """One call of a contract: what it passes and how it names it."""

    name: str
    expected: str
    slots: tuple[contracts.Slot, ...]
    params_where_declared: bool = False


MODULE_ENCODE = Contract("encode", "encode(image, device, **params)",
                         (contracts.Slot("image", contracts.DATA, any_name=True), contracts.Slot("device", DEVICE)))
CODEC_INIT = Contract("Codec", "Codec(device, **params)", (contracts.Slot("device", DEVICE),))
SEED_DECODE = Contract("run_decoding_agent", "run_decoding_agent(device, encoding_data)",
                       (contracts.Slot("device", DEVICE), contracts.Slot("encoding_data", contracts.DATA)), True)
CONTRACTS = (MODULE_ENCODE, CODEC_INIT, SEED_DECODE)
PARAM_NAMES = ("quality", "level", "mode")
OTHER_NAMES = ("x", "img", "data", "arg")


def _bind(contract: Contract, fn: Any, params: dict[str, Any]) -> contracts.BoundCall:
    return contracts.bind_call(fn, contract.name, contract.expected, Path("/nonexistent"), types_pb2.PHASE_LOAD,
                               contract.slots, params, params_where_declared=contract.params_where_declared)


def _function(name: str, parameters: list[P]) -> Any:
    """A real function with this signature (compiled from source) that returns what it received."""
    source = f"def {name}{inspect.Signature(parameters)}:\n    return dict(locals())\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, "<generated agent>", "exec"), namespace)  # noqa: S102 - our own generated source
    return namespace[name]


@st.composite
def legal_shapes(draw: st.DrawFn) -> tuple[Contract, dict[str, Any], list[P]]:
    """A contract, a parameter point and a signature that can receive them, in any legal shape."""
    contract = draw(st.sampled_from(CONTRACTS))
    names = draw(st.lists(st.sampled_from(PARAM_NAMES), unique=True, max_size=3))
    params = {n: f"<{n}>" for n in names}
    items: list[tuple[str, str, bool]] = [(s.name, "slot", s.any_name) for s in contract.slots]
    items += [(n, "param", False) for n in names]
    # How many of the contract's own arguments come first as positional-only (names then do not matter),
    # then, if all of them do, how many of the point's parameters follow as positional-only too.
    k = draw(st.integers(0, len(contract.slots)))
    j = draw(st.integers(0, len(names))) if k == len(contract.slots) else 0
    pos_only, pos_or_kw, kw_only, absorbed = [], [], [], []
    data_in_args = False
    for i, (name, what, any_name) in enumerate(items):
        if i < k:
            pos_only.append(draw(st.sampled_from((name, *OTHER_NAMES))) + f"_{i}" if what == "slot" else name)
            continue
        if what == "param" and i - len(contract.slots) < j:
            pos_only.append(name)
            continue
        first = not pos_only and not pos_or_kw
        if any_name:  # the data argument: any name as the first positional parameter, or *args
            kinds = ("any_name", "by_name", "kw_only", "args") if first else ("by_name", "kw_only")
            kind = draw(st.sampled_from(kinds))
            if kind == "any_name":
                pos_or_kw.append(draw(st.sampled_from(OTHER_NAMES)))
            elif kind == "by_name":
                pos_or_kw.append(name)
            elif kind == "kw_only":
                kw_only.append(name)
            else:
                data_in_args = True
            continue
        choices = ["kw_only", "absorbed"] + ([] if data_in_args else ["by_name"])
        if what == "param" and contract.params_where_declared:
            choices.append("undeclared")
        kind = draw(st.sampled_from(choices))
        {"by_name": pos_or_kw, "kw_only": kw_only, "absorbed": absorbed, "undeclared": []}[kind].append(name)
    # Extra parameters the contract does not pass, with defaults; defaults on a tail of the positional ones.
    # Defaults are str like the values passed ('<quality>'), so the type check of check_param_types passes.
    extra_positional = draw(st.booleans()) and not data_in_args
    extra_keyword = draw(st.booleans())
    positional = [(n, P.POSITIONAL_ONLY) for n in pos_only] + [(n, P.POSITIONAL_OR_KEYWORD) for n in pos_or_kw]
    first_default = draw(st.integers(0, len(positional)))
    parameters = [P(n, kind, default=DEFAULT if i >= first_default else P.empty)
                  for i, (n, kind) in enumerate(positional)]
    if extra_positional:
        parameters.append(P("extra_positional", P.POSITIONAL_OR_KEYWORD, default=DEFAULT))
    if data_in_args or draw(st.booleans()):
        parameters.append(P("args", P.VAR_POSITIONAL))
    parameters += [P(n, P.KEYWORD_ONLY, default=draw(st.sampled_from((P.empty, DEFAULT)))) for n in kw_only]
    if extra_keyword:
        parameters.append(P("extra_keyword", P.KEYWORD_ONLY, default=DEFAULT))
    if absorbed or draw(st.booleans()):
        parameters.append(P("kwargs", P.VAR_KEYWORD))
    return contract, params, parameters


def _received(sig: inspect.Signature, got: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """(name it arrived under, or None for *args, value) for every argument the function received."""
    out: list[tuple[str | None, Any]] = []
    for p in sig.parameters.values():
        if p.kind is P.VAR_POSITIONAL:
            out += [(None, v) for v in got[p.name]]
        elif p.kind is P.VAR_KEYWORD:
            out += list(got[p.name].items())
        elif got[p.name] is not p.default or p.default is P.empty:
            out.append((p.name if p.kind is not P.POSITIONAL_ONLY else None, got[p.name]))
    return out


@settings(max_examples=300, deadline=None)
@given(legal_shapes())
def test_every_legal_signature_binds_and_receives_each_argument_once(
    shape: tuple[Contract, dict[str, Any], list[P]],
) -> None:
    contract, params, parameters = shape
    fn = _function(contract.name, parameters)
    got = _bind(contract, fn, params)(IMAGE)
    received = _received(inspect.signature(fn), got)
    values = [v for _, v in received]
    passed = {s.name: (IMAGE if s.value is contracts.DATA else s.value) for s in contract.slots}
    declared = {p.name for p in parameters if p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)}
    has_kwargs = any(p.kind is P.VAR_KEYWORD for p in parameters)
    for name, value in passed.items():
        assert values.count(value) == 1, (name, received)
    for name, value in params.items():
        undeclared = contract.params_where_declared and name not in declared and not has_kwargs
        assert values.count(value) == (0 if undeclared else 1), (name, received)
    # Whatever arrived under a name the contract or the point uses is that argument's value.
    for name, value in received:
        if name in passed:
            assert value == passed[name], (name, received)
        if name in params:
            assert value == params[name], (name, received)


@st.composite
def illegal_shapes(draw: st.DrawFn) -> tuple[Contract, dict[str, Any], list[P]]:
    """A legal shape broken so that it cannot receive the arguments."""
    contract, params, parameters = draw(legal_shapes())
    has_kwargs = any(p.kind is P.VAR_KEYWORD for p in parameters)
    breaks = ["required_extra"]
    if not has_kwargs and any(p.name == "device" for p in parameters):
        breaks.append("rename_device")
    if not has_kwargs and not contract.params_where_declared and any(p.name in params for p in parameters
                                                                   if p.kind is not P.POSITIONAL_ONLY):
        breaks.append("drop_param")
    how = draw(st.sampled_from(breaks))
    if how == "required_extra":  # a keyword-only parameter without default that nothing passes
        at = next((i for i, p in enumerate(parameters) if p.kind is P.VAR_KEYWORD), len(parameters))
        return contract, params, [*parameters[:at], P("needs_this", P.KEYWORD_ONLY), *parameters[at:]]
    if how == "rename_device":  # the old runner's kind of bug: the agent's name differs from the contract's
        return contract, params, [p.replace(name="dev") if p.name == "device" else p for p in parameters]
    name = next(p.name for p in parameters if p.name in params and p.kind is not P.POSITIONAL_ONLY)
    return contract, params, [p for p in parameters if p.name != name]


@settings(max_examples=200, deadline=None)
@given(illegal_shapes())
def test_a_signature_that_cannot_receive_the_arguments_is_a_mismatch_naming_both(
    shape: tuple[Contract, dict[str, Any], list[P]],
) -> None:
    contract, params, parameters = shape
    fn = _function(contract.name, parameters)
    with pytest.raises(errors.SignatureMismatch) as raised:
        _bind(contract, fn, params)
    error = raised.value.error
    assert error.expected == contract.expected
    assert error.actual == f"{contract.name}{inspect.signature(fn)}"
    assert contract.expected in error.message and error.actual in error.message


# ---- the shapes the issue names, one by one (in-process) ----

ENCODE = MODULE_ENCODE


def test_positional_only_image_and_device() -> None:
    def encode(image: str, device: str, /, **params: int) -> tuple[str, str, dict[str, int]]:
        return image, device, params

    assert _bind(ENCODE, encode, {"quality": 5})(IMAGE) == (IMAGE, DEVICE, {"quality": 5})


def test_codec_init_with_positional_only_device_and_keyword_only_quality() -> None:
    class Codec:
        def __init__(self, device: str, /, *, quality: int = 75) -> None:
            self.got = (device, quality)

    assert _bind(CODEC_INIT, Codec, {"quality": 30})().got == (DEVICE, 30)


def test_methods_callable_instances_and_partials() -> None:
    class Encoder:
        def __call__(self, image: str, device: str, quality: int) -> tuple[str, str, int]:
            return image, device, quality

        def method(self, x: str, device: str, **params: Any) -> tuple[str, str, dict[str, Any]]:
            return x, device, params

    def plain(image: str, device: str, quality: int, level: int) -> tuple[str, str, int, int]:
        return image, device, quality, level

    assert _bind(ENCODE, Encoder(), {"quality": 3})(IMAGE) == (IMAGE, DEVICE, 3)
    assert _bind(ENCODE, Encoder().method, {"quality": 3})(IMAGE) == (IMAGE, DEVICE, {"quality": 3})
    assert _bind(ENCODE, functools.partial(plain, level=9), {"quality": 3})(IMAGE) == (IMAGE, DEVICE, 3, 9)


def test_async_def_is_awaited() -> None:
    async def encode(image: str, device: str, quality: int) -> tuple[str, str, int]:
        return image, device, quality

    assert _bind(ENCODE, encode, {"quality": 4})(IMAGE) == (IMAGE, DEVICE, 4)


def test_a_seed_encoder_takes_the_image_only_when_it_names_it() -> None:
    def with_image(device: str = "cpu", image: Any = None) -> None: ...
    def without(device: str = "cpu") -> None: ...
    def catch_all(device: str = "cpu", **kwargs: Any) -> None: ...

    assert contracts.seed_takes_image(with_image)
    assert not contracts.seed_takes_image(without) and not contracts.seed_takes_image(catch_all)


# ---- hostile-tester findings (issue 13, round d): each shape as written must bind ----

METHOD_ENCODE = contracts.Slot("image", contracts.DATA, any_name=True)
METHOD_DECODE = contracts.Slot("bitstream", contracts.DATA, any_name=True)


def _check_method(cls: type, method_name: str) -> None:
    data = METHOD_ENCODE if method_name == "encode" else METHOD_DECODE
    contracts.check_method_on_class(cls, method_name, f"Codec.{method_name}",
                                    f"Codec.{method_name}(self, {data.name})", data, Path("/nonexistent"),
                                    types_pb2.PHASE_LOAD)


def test_codec_methods_take_the_data_under_any_name() -> None:
    # Old: SIGNATURE_MISMATCH "multiple values for argument 'self'" for decode(self, b).
    class Codec:
        def encode(self, x: str) -> str:
            return x

        def decode(self, b: str, /) -> str:
            return b

        @staticmethod
        def other(data: str) -> str:
            return data

    for method in ("encode", "decode"):
        _check_method(Codec, method)
    call = contracts.bind_call(Codec().decode, "Codec.decode", "Codec.decode(self, bitstream)", Path("/x"),
                               types_pb2.PHASE_LOAD, [METHOD_DECODE])
    assert call(IMAGE) == IMAGE


def test_a_codec_method_that_cannot_take_the_data_is_still_refused_on_the_class() -> None:
    class Codec:
        def encode(self, image: str, needed: str) -> str:
            return image

    with pytest.raises(errors.SignatureMismatch) as raised:
        _check_method(Codec, "encode")
    assert raised.value.error.actual == "Codec.encode(self, image: 'str', needed: 'str') -> 'str'"


def test_callable_instances_and_partials_as_codec_class_attributes_get_no_self() -> None:
    # Old: refused; Python calls a non-descriptor attribute without self.
    class Encoder:
        def __call__(self, image: str) -> str:
            return image

    def _decode(bitstream: str, level: int) -> str:
        return bitstream

    class Codec:
        encode = Encoder()
        decode = functools.partial(_decode, level=3)

    _check_method(Codec, "encode")
    _check_method(Codec, "decode")


def test_positional_only_parameters_named_like_the_contracts_bind_by_name() -> None:
    # Old: encode(device, image, /) received the image in device.
    def encode(device: str, image: str, /) -> tuple[str, str]:
        return device, image

    def encode_named_later(x: str, device: str, /) -> tuple[str, str]:
        return x, device

    def device_named_first(device: str, x: str, /) -> tuple[str, str]:
        return device, x

    assert _bind(ENCODE, encode, {})(IMAGE) == (DEVICE, IMAGE)
    assert _bind(ENCODE, encode_named_later, {})(IMAGE) == (IMAGE, DEVICE)
    assert _bind(ENCODE, device_named_first, {})(IMAGE) == (DEVICE, IMAGE)

    def run_encoding_agent(device: str, image: str, /) -> tuple[str, str]:
        return device, image

    assert contracts.seed_takes_image(run_encoding_agent)
    slots = [contracts.Slot("device", DEVICE), contracts.Slot("image", contracts.DATA, optional=True)]
    seed = contracts.bind_call(run_encoding_agent, "run_encoding_agent", "run_encoding_agent(device[, image])",
                               Path("/x"), types_pb2.PHASE_LOAD, slots)
    assert seed(IMAGE) == (DEVICE, IMAGE)


def test_a_mismatch_never_shows_the_same_text_as_expected_and_actual() -> None:
    def encode(image, device, /):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        return image

    with pytest.raises(errors.SignatureMismatch) as raised:
        contracts.bind_call(encode, "encode", "encode(image, device)", Path("/x"), types_pb2.PHASE_LOAD,
                            [contracts.Slot("image", contracts.DATA, any_name=True),
                             contracts.Slot("device", DEVICE)], {"quality": 3})
    error = raised.value.error
    assert error.actual != error.expected


def test_args_only_receives_every_contract_argument_positionally() -> None:
    # Old: "unexpected keyword argument 'device'".
    def encode(*args: str) -> tuple[str, ...]:
        return args

    assert _bind(ENCODE, encode, {})(IMAGE) == (IMAGE, DEVICE)


def test_a_decorator_that_changes_the_signature_binds_on_the_wrappers_own() -> None:
    # Old: bound on __wrapped__ (encode(image)), so device had nowhere to go.
    def deco(f: Any) -> Any:
        @functools.wraps(f)
        def wrapper(x: str, device: str, *a: Any, **k: Any) -> Any:
            return f(x)
        return wrapper

    @deco
    def encode(image: str) -> tuple[str]:
        return (image,)

    assert _bind(ENCODE, encode, {"quality": 2})(IMAGE) == (IMAGE,)


@pytest.mark.parametrize("kind", ["async_generator", "generator", "async_init"])
def test_generators_and_async_constructors_are_refused_at_load_with_advice(kind: str) -> None:
    async def agen(image: str, device: str) -> Any:
        yield image

    def gen(image: str, device: str) -> Any:
        yield image

    class Codec:
        async def __init__(self, device: str) -> None:  # type: ignore[misc]
            pass

    fn, contract = {"async_generator": (agen, ENCODE), "generator": (gen, ENCODE),
                    "async_init": (Codec, CODEC_INIT)}[kind]
    with pytest.raises(errors.SignatureMismatch) as raised:
        _bind(contract, fn, {})
    message = raised.value.error.message
    if kind == "async_init":
        assert "Codec.__init__ is async def" in message and "plain def" in message
    else:
        assert "generator function" in message and "return the value instead of yielding it" in message
