"""Loading an agent and calling it by its contract, with arguments bound from real signatures.

Runs inside the sandbox child only. The old runner passed a dict where the agent expected a
device string; here every call is bound by parameter name against the agent's actual signature
before any data is processed, and a mismatch is a SIGNATURE_MISMATCH that names the function,
what the contract passes and what the agent declares. Parameter values are checked against the
parameter's default (or plain annotation) at the same time (:func:`check_param_types`).

Contracts (docs/agents.md):

- codec, class form:  ``Codec(device, **params)``, ``.encode(image) -> bytes``,
  ``.decode(bitstream) -> Tensor``
- codec, module form: ``encode(image, device, **params) -> bytes``,
  ``decode(bitstream, device, **params) -> Tensor``
- seed: ``run_encoding_agent(device[, image][, **params]) -> dict``,
  ``run_decoding_agent(device, encoding_data) -> dict`` whose ``reconstruction`` entry is the image.
"""

from __future__ import annotations

import asyncio
import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from codecbench import errors
from codecbench.v1 import errors_pb2, types_pb2

CODEC = types_pb2.CONTRACT_CODEC
SEED = types_pb2.CONTRACT_SEED
RECONSTRUCTION_KEY = "reconstruction"
_PLACEHOLDER = object()  # stands for the image/bitstream when signatures are checked before any data


def _location(fn: Callable[..., Any], bundle_dir: Path) -> str:
    if inspect.isclass(fn):  # Codec(device, **params): the signature is that of __init__
        fn = fn.__init__
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return ""
    try:
        rel = Path(code.co_filename).resolve().relative_to(bundle_dir.resolve()).as_posix()
    except ValueError:
        rel = code.co_filename
    return f"{rel}:{code.co_firstlineno}"


def definition_location(fn: Callable[..., Any], bundle_dir: Path) -> str:
    """``file:line`` of the definition of ``fn`` (of ``__init__`` for a class), the file relative to
    the bundle; ``""`` when it has no Python code (a builtin)."""
    return _location(fn, bundle_dir)


def _describe_signature(name: str, fn: Callable[..., Any]) -> str:
    try:
        return f"{name}{inspect.signature(fn)}"
    except (TypeError, ValueError):
        return f"{name}(?)"


@dataclass(frozen=True)
class Slot:
    """One argument a contract passes besides the parameter point.

    Attributes:
        name: the contract's name for it (``device``, ``image``, ``bitstream``, ``encoding_data``).
        value: what is passed; :data:`DATA` for the image/bitstream/dict that comes with each call.
        any_name: the first positional parameter receives it whatever its name (the data argument
            of ``encode``/``decode``); a parameter with the contract's name takes it by name instead.
        optional: passed only where the function can take it (the seed encoder's ``image``).
    """

    name: str
    value: Any
    any_name: bool = False
    optional: bool = False


DATA: Any = _PLACEHOLDER


@dataclass
class BoundCall:
    """A callable with the contract's arguments planned from its real signature.

    ``args``/``kwargs`` are what every call passes; the data (image, bitstream, encoding dict)
    goes at ``args[data_index]`` or ``kwargs[data_keyword]`` when the function takes one.
    """

    fn: Callable[..., Any]
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    data_index: int | None = None
    data_keyword: str | None = None
    # What :func:`check_param_types` converted, one line each, for the experiment's log.
    notes: tuple[str, ...] = ()

    @property
    def takes_data(self) -> bool:
        """Whether the call receives the data (a seed encoder without an ``image`` parameter does not)."""
        return self.data_index is not None or self.data_keyword is not None

    def __call__(self, data: Any = _PLACEHOLDER) -> Any:
        """Calls the agent with the planned arguments plus ``data``; awaits an ``async def`` agent.

        A coroutine is run to its end on a fresh event loop (:func:`asyncio.run`), so an
        ``async def encode`` works like a plain one; the rejected alternative, refusing it at load,
        would turn away agents that only await their own async I/O.
        """
        args, kwargs = list(self.args), dict(self.kwargs)
        if self.data_index is not None:
            args[self.data_index] = data
        elif self.data_keyword is not None:
            kwargs[self.data_keyword] = data
        result = self.fn(*args, **kwargs)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return result


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_BY_NAME = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_NAMED = (*_POSITIONAL, inspect.Parameter.KEYWORD_ONLY)
_MISSING = object()  # a positional-only parameter nothing fills


def plan_arguments(
    sig: inspect.Signature, slots: Sequence[Slot], params: Mapping[str, Any], params_where_declared: bool = False
) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments that pass ``slots`` and ``params`` to a function of ``sig``.

    Every kind of parameter is honoured:

    - a positional-only parameter named like one of the contract's arguments (``device``,
      ``image``, ``bitstream``, ``encoding_data``) receives that argument (``encode(device, image, /)``);
      the other positional-only parameters receive the contract's remaining arguments (those no
      parameter names) in the contract's order (``encode(x, d, /)``), then the point's parameter of
      their name (earlier positional-only parameters the point skips keep their defaults);
    - positional-or-keyword and keyword-only parameters receive the argument of their name;
    - the data argument (``any_name``) goes to the first positional parameter whatever its name;
    - ``*args`` takes a data argument no named parameter takes, and, when the function takes nothing
      by keyword (no keyword parameters, no ``**kwargs``), every contract argument left
      (``encode(*args)`` gets image, device);
      ``**kwargs`` takes everything else.

    Args:
        sig: the agent function's real signature (:func:`inspect.signature`).
        slots: the contract's own arguments, in the contract's positional order.
        params: the parameter point (``{"quality": 50}``).
        params_where_declared: pass a parameter only where the function names it or has ``**kwargs``
            (the seed decoder); otherwise every one is passed and an unknown one is a mismatch.

    Returns:
        ``(args, kwargs)``, not yet checked: :meth:`inspect.Signature.bind` says whether they fit.
    """
    parameters = list(sig.parameters.values())
    positional = [p for p in parameters if p.kind in _POSITIONAL]
    pos_only = [p for p in positional if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    by_name = {p.name for p in parameters if p.kind in _BY_NAME}
    pos_only_names = {p.name for p in pos_only}
    var_positional = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    # An optional slot (the seed encoder's image) only where a parameter of its name asks for it.
    active = [s for s in slots if not s.optional or s.name in by_name or s.name in pos_only_names]
    of_name = {s.name: s for s in active}
    rest = dict(params)
    # 1. Positional-only parameters: by their names where they are the contract's, the others in order.
    queue = [s for s in active if s.name not in pos_only_names and s.name not in by_name]
    placed: set[str] = set()
    filled: list[Any] = []
    for p in pos_only:
        if p.name in of_name:
            slot = of_name[p.name]
        elif p.name in rest:
            filled.append(rest.pop(p.name))
            continue
        elif queue:
            slot = queue.pop(0)
        else:
            filled.append(_MISSING)
            continue
        placed.add(slot.name)
        filled.append(slot.value)
    while filled and filled[-1] is _MISSING:
        filled.pop()
    args: list[Any] = []
    for p, value in zip(pos_only, filled, strict=False):  # filled may stop early
        if value is _MISSING:
            if p.default is inspect.Parameter.empty:
                break  # bind() names the missing argument
            value = p.default
        args.append(value)
    kwargs: dict[str, Any] = {}
    # 2. The other slots, in the contract's order.
    for slot in active:
        if slot.name in placed:
            continue
        following = positional[len(args)] if len(args) < len(positional) else None
        if following is not None and following.name == slot.name:
            args.append(slot.value)  # its own parameter, at its own position
        elif slot.name in by_name:
            kwargs[slot.name] = slot.value
        elif slot.any_name and (following is not None or var_positional):
            args.append(slot.value)
        elif following is None and var_positional and not by_name and not var_keyword:
            args.append(slot.value)  # a function that takes nothing by keyword: only *args can take it
        else:  # **kwargs takes it; without one, bind() names what is wrong
            kwargs[slot.name] = slot.value
    for key, value in rest.items():
        if key in by_name or var_keyword or not params_where_declared:
            kwargs[key] = value
    return args, kwargs


# The scalar types whose parameters are checked: their values cross the wire as distinct Value kinds.
_CHECKED_TYPES: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


def _declared_type(parameter: inspect.Parameter) -> tuple[type, str] | None:
    """The scalar type a parameter's default (or, without one, its plain annotation) declares, with
    how it was declared (``default 6``, ``annotation int``); None when it declares none of
    :data:`_CHECKED_TYPES`."""
    if parameter.default is not inspect.Parameter.empty:
        of_default = type(parameter.default)
        return (of_default, f"default {parameter.default!r}") if of_default in _CHECKED_TYPES.values() else None
    annotation = parameter.annotation
    # With ``from __future__ import annotations`` the annotation is the string "int".
    declared = _CHECKED_TYPES.get(annotation) if isinstance(annotation, str) else annotation
    if isinstance(declared, type) and declared in _CHECKED_TYPES.values():
        return declared, f"annotation {declared.__name__}"
    return None


def _fits(value: Any, kind: type) -> bool:
    """Whether ``value`` is acceptable where ``kind`` is declared; bool is no int here (True for
    quality=... is a mistake), an int is a float (Python's own numeric tower)."""
    if kind is float:
        return type(value) in (int, float)
    return type(value) is kind


def check_param_types(
    sig: inspect.Signature, params: Mapping[str, Any], name: str, phase: types_pb2.Phase.ValueType, location: str
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Checks each parameter's value against the type its default (or plain annotation) declares.

    The agent would otherwise meet the wrong type deep in its own code ("'float' object cannot be
    interpreted as an integer" from ``zlib.compress(data, 9.0)``). An integral float where an int is
    declared is converted, with a note: JSON and JavaScript clients have one number type and send
    ``9`` as ``float_value``. Any other mismatch is refused. Parameters that declare another type,
    none, or that only ``**kwargs`` takes are passed as they are.

    Args:
        sig: the agent function's real signature.
        params: the parameter point as Python values.
        name: the function's name, for the messages.
        phase: the phase of the error.
        location: the agent's file:line to blame.

    Returns:
        The parameters with integral floats converted where an int is declared, and one note per
        conversion.

    Raises:
        errors.SignatureMismatch: a value of another type than the declared one; the error names
            the parameter and both types.
    """
    checked = dict(params)
    notes: list[str] = []
    for key, value in params.items():
        parameter = sig.parameters.get(key)
        if parameter is None or parameter.kind not in (*_POSITIONAL, inspect.Parameter.KEYWORD_ONLY):
            continue
        declared = _declared_type(parameter)
        if declared is None or _fits(value, declared[0]):
            continue
        kind, how = declared
        if kind is int and type(value) is float and value.is_integer():
            checked[key] = int(value)
            notes.append(f"codecbench: parameter {key}={value!r} (float) converted to int {int(value)} "
                         f"for {name}, whose {how} is an int")
            continue
        wanted = f"{'an' if kind is int else 'a'} {kind.__name__}"  # int is the only checked type with a vowel
        given = f"the {type(value).__name__} {errors.echo(value, 80)}"
        raise errors.SignatureMismatch(
            f"parameter {key} of {name} must be {wanted} ({how}), got {given}",
            phase=phase, expected=f"{key}: {wanted}", actual=f"{key}: {given}", location=location,
        )
    return checked, tuple(notes)


def seed_takes_image(run_encoding_agent: Callable[..., Any]) -> bool:
    """Whether a seed encoder declares a parameter named ``image`` (of any kind but ``*args`` and
    ``**kwargs``; the same rule as the optional slot of :func:`plan_arguments`)."""
    try:
        parameter = call_signature(run_encoding_agent).parameters.get("image")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind in _NAMED


def as_called_on_instance(cls: type, method_name: str) -> Callable[..., Any] | None:
    """``cls.<method_name>`` as it will be called on an instance, found on the class before any
    instance exists, so its signature can be checked before ``Codec(...)`` runs (it may load
    weights for minutes).

    A plain function becomes a bound method (``self`` is taken); a static method stays as it is,
    a class method is bound to the class; an attribute that is no descriptor (a callable instance,
    a ``functools.partial``) is called as it is, without ``self``, as Python does. None for
    another descriptor (a property, a custom ``__get__``), whose result only an instance shows.
    """
    static = inspect.getattr_static(cls, method_name, None)
    if isinstance(static, staticmethod):
        return static.__func__
    if isinstance(static, classmethod):
        return cast(Callable[..., Any], getattr(cls, method_name))
    if inspect.isfunction(static):
        return types.MethodType(static, object())
    if not hasattr(type(static), "__get__"):
        return cast(Callable[..., Any], static)
    return None


def check_method_on_class(cls: type, method_name: str, name: str, expected: str, data: Slot, bundle_dir: Path,
                          phase: types_pb2.Phase.ValueType) -> None:
    """Checks that ``Codec.encode``/``decode`` can take the data argument, on the class, before
    ``Codec(...)`` runs (it may load weights for minutes), as the method will be called on an
    instance (:func:`as_called_on_instance`). A descriptor whose result only an instance shows is
    checked after the instance exists.

    Raises:
        errors.SignatureMismatch: no such callable attribute, or one that cannot take the data.
    """
    if not callable(getattr(cls, method_name, None)):
        raise errors.SignatureMismatch(
            f"class Codec has no method {method_name}()", phase=phase, expected=expected, actual="missing",
        )
    on_instance = as_called_on_instance(cls, method_name)
    if on_instance is None:
        return
    written = inspect.getattr_static(cls, method_name)
    bind_call(on_instance, name, expected, bundle_dir, phase, [data],
              shown=written if inspect.isfunction(written) else on_instance)


def call_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """The signature :func:`inspect.signature` gives (through ``__wrapped__``, as documented).

    Raises:
        TypeError, ValueError: ``fn`` has no inspectable signature.
    """
    return inspect.signature(fn)


def _signatures(fn: Callable[..., Any]) -> list[inspect.Signature]:
    """The signatures a call of ``fn`` may really be bound on: the one :func:`inspect.signature`
    finds through ``__wrapped__`` (the decorated function, whose names are the useful ones when a
    ``functools.wraps`` wrapper passes its arguments through), then the wrapper's own, when it
    differs (a decorator that changes the signature: the call goes to the wrapper).

    Raises:
        TypeError, ValueError: ``fn`` has no inspectable signature.
    """
    followed = inspect.signature(fn)
    try:
        own = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):
        return [followed]
    return [followed] if own == followed else [followed, own]


def _refuse_non_returning(fn: Callable[..., Any], name: str, expected: str, bundle_dir: Path,
                          phase: types_pb2.Phase.ValueType) -> None:
    """Refuses, at load, a contract function that cannot return the contract's value when called:
    a generator or async generator function (``yield``), or a class whose ``__init__`` is
    ``async def`` or a generator (Python refuses such a constructor at the call).

    Raises:
        errors.SignatureMismatch: naming the function, what it is, and what to write instead.
    """
    target = fn.__init__ if inspect.isclass(fn) else fn
    shown = f"{name}.__init__" if inspect.isclass(fn) else name
    if inspect.isasyncgenfunction(target):
        what, advice = "an async generator function (async def with yield)", "return the value instead of yielding it"
    elif inspect.isgeneratorfunction(target):
        what, advice = "a generator function (it yields)", "return the value instead of yielding it"
    elif inspect.isclass(fn) and inspect.iscoroutinefunction(target):
        what, advice = ("async def, and a constructor cannot be awaited (Python refuses the coroutine it returns)",
                        "make __init__ a plain def and run async set-up inside it with asyncio.run(...)")
    else:
        return
    actual = f"{what}: {_describe_signature(shown, target)}"
    raise errors.SignatureMismatch(
        f"{shown} is {what}; the contract calls {expected} and uses what it returns: {advice}",
        phase=phase, expected=expected, actual=actual, location=_location(fn, bundle_dir),
    )


def bind_call(
    fn: Callable[..., Any],
    name: str,
    expected: str,
    bundle_dir: Path,
    phase: types_pb2.Phase.ValueType,
    slots: Sequence[Slot],
    params: Mapping[str, Any] | None = None,
    params_where_declared: bool = False,
    shown: Callable[..., Any] | None = None,
) -> BoundCall:
    """Plans the call of ``fn`` from its real signature (:func:`plan_arguments`) and checks it.

    The data slot (value :data:`DATA`) is bound to a placeholder now, so a mismatch is found
    before any data. Parameter values are checked by :func:`check_param_types` first; its notes
    are on the returned call. A decorated function is bound on the decorated function's
    signature when that one can take the call, else on the wrapper's own (:func:`_signatures`).

    Args:
        fn: what will be called (a function, a bound method, a class, a callable object).
        name: its name in messages (``Codec.encode``).
        expected: the contract's call, in messages.
        bundle_dir: the agent's folder, to name file:line.
        phase: the phase of an error.
        slots: the contract's arguments.
        params: the parameter point.
        params_where_declared: see :func:`plan_arguments`.
        shown: what a mismatch shows as the agent's declaration, when not ``fn`` (the method as
            written, with ``self``, for ``fn`` bound to a stand-in instance).

    Raises:
        errors.SignatureMismatch: the function cannot take these arguments; the error names the
            function, what the contract passes (``expected``) and what the agent declares; or a
            parameter's value has another type than its default declares; or the function is a
            generator, or a class with an ``async def __init__``.
    """
    location = _location(shown or fn, bundle_dir)
    try:
        signatures = _signatures(fn)
    except (TypeError, ValueError) as exc:
        raise errors.SignatureMismatch(
            f"{name} has no inspectable signature ({exc})", phase=phase, expected=expected, actual=name
        ) from exc
    _refuse_non_returning(fn, name, expected, bundle_dir, phase)
    first_error: errors.SignatureMismatch | None = None
    for sig in signatures:
        try:
            checked, notes = check_param_types(sig, params or {}, name, phase, location)
            args, kwargs = plan_arguments(sig, slots, checked, params_where_declared)
            sig.bind(*args, **kwargs)
        except errors.SignatureMismatch as exc:
            first_error = first_error or exc
            continue
        except TypeError as exc:
            if first_error is None:
                first_error = _mismatch(name, expected, exc, shown or fn, signatures, phase, location,
                                        _did_you_mean(sig, params or {}))
                first_error.__cause__ = exc
            continue
        data_index = next((i for i, a in enumerate(args) if a is DATA), None)
        data_keyword = next((k for k, v in kwargs.items() if v is DATA), None)
        return BoundCall(fn, name, tuple(args), kwargs, data_index, data_keyword, notes)
    assert first_error is not None
    raise first_error


def _mismatch(name: str, expected: str, exc: TypeError, shown: Callable[..., Any],
              signatures: Sequence[inspect.Signature], phase: types_pb2.Phase.ValueType,
              location: str, hint: str = "") -> errors.SignatureMismatch:
    """The SIGNATURE_MISMATCH of a call that cannot be bound: what the contract passes, what went
    wrong (with ``hint``, e.g. a did-you-mean), what the agent declares (and, for a decorated
    function, what its wrapper declares)."""
    actual = _describe_signature(name, shown)
    if len(signatures) > 1:
        actual += f" (called through a wrapper declaring {name}{signatures[1]})"
    if actual == expected:  # same text, different kinds: say which kinds, or the message reads as nonsense
        kinds = ", ".join(f"{p.name}: {p.kind.description}" for p in signatures[0].parameters.values())
        actual += f" [{kinds}]"
    return errors.SignatureMismatch(
        f"{name} cannot be called as {expected}: {exc}{hint}; the agent declares {actual}",
        phase=phase, expected=expected, actual=actual, location=location,
    )


def _did_you_mean(sig: inspect.Signature, params: Mapping[str, Any]) -> str:
    """``" (did you mean 'scale'?)"`` for a point's parameter the function does not declare whose name
    is close to one it does (:func:`difflib.get_close_matches`, its default cutoff 0.6); else ``""``."""
    declared = [p.name for p in sig.parameters.values() if p.kind in _BY_NAME]
    for key in params:
        if key not in sig.parameters and (close := difflib.get_close_matches(key, declared, n=1)):
            return f" (did you mean {close[0]!r}?)"
    return ""


# The agent's folder is imported as this package, so relative imports inside the bundle work
# (``from .helpers.bits import pack``); the folder is also first on sys.path, so sibling imports
# (``import model``) work as before.
PACKAGE = "codecbench_bundle"


def _bundle_package(bundle_dir: Path) -> None:
    """Registers the bundle folder as the package :data:`PACKAGE` (running its ``__init__.py``, if any)."""
    init = bundle_dir / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[str(bundle_dir)])
    else:  # a namespace package: a folder of modules without __init__.py
        spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
        spec.submodule_search_locations = [str(bundle_dir)]
    assert spec is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    if spec.loader is not None:
        spec.loader.exec_module(package)


def _import_advice(exc: BaseException, entry_module: str) -> str:
    """What to do about a failed relative import, or ``""`` for other failures."""
    text = str(exc)
    missing = getattr(exc, "name", None) or ""
    if isinstance(exc, ModuleNotFoundError) and missing.startswith(PACKAGE + "."):
        path = missing.removeprefix(PACKAGE + ".").replace(".", "/")
        return (f"; the agent's folder is imported as a package (entry module {entry_module}), so a relative "
                f"import looks for {path}.py or a folder {path}/ inside it, and the bundle has neither: put the "
                "module in the agent's folder (codecbench run sends every file under it)")
    if "relative import" in text:
        return (f"; the agent's folder is imported as a package (entry module {entry_module}): a relative import "
                "can reach only modules inside that folder, and the folder itself is the top level")
    return ""


def import_entry(bundle_dir: Path, entry_module: str) -> Any:
    """Imports the agent's entry module as a module of the package :data:`PACKAGE` (the bundle
    folder), with the folder also first on ``sys.path``.

    Raises:
        errors.AgentLoadError: syntax error, missing module or an exception at import, with the
            file and line in the agent's files; a failed relative import says what to do.
    """
    from sandbox.tracebacks import exception_error, safe_str

    top = entry_module.split(".")[0]
    if top in sys.modules:
        raise errors.AgentLoadError(
            f"entry module {entry_module!r} has the name of a module the sandbox runtime already imported "
            f"({top}); rename the agent's module", phase=types_pb2.PHASE_LOAD,
        )
    sys.path.insert(0, str(bundle_dir))
    try:
        _bundle_package(bundle_dir)
        return importlib.import_module(f"{PACKAGE}.{entry_module}")
    except BaseException as exc:  # noqa: BLE001 - SystemExit at import is the agent's fault too
        detail = safe_str(exc).replace(f"{PACKAGE}.", "")
        message = f"importing {entry_module}: {type(exc).__name__}: {detail}{_import_advice(exc, entry_module)}"
        error = exception_error(exc, errors_pb2.ERROR_KIND_AGENT_LOAD_ERROR, types_pb2.PHASE_LOAD, bundle_dir, message)
        raise errors.from_proto(error) from exc


_CONTRACT_FORMS = "class Codec, or functions encode()/decode(), or run_encoding_agent()/run_decoding_agent()"


def detect_contract(
    module: Any, requested: types_pb2.Contract.ValueType
) -> tuple[types_pb2.Contract.ValueType, str]:
    """Which contract (and form: ``"class"``, ``"module"``, ``"seed"``) the module follows.

    Raises:
        errors.SignatureMismatch: the module defines none of the forms the request allows.
    """
    has_class = inspect.isclass(getattr(module, "Codec", None))
    has_functions = callable(getattr(module, "encode", None)) and callable(getattr(module, "decode", None))
    has_seed = callable(getattr(module, "run_encoding_agent", None)) and callable(
        getattr(module, "run_decoding_agent", None)
    )
    if requested in (CODEC, types_pb2.CONTRACT_UNSPECIFIED):
        if has_class:
            return CODEC, "class"
        if has_functions:
            return CODEC, "module"
    if requested in (SEED, types_pb2.CONTRACT_UNSPECIFIED) and has_seed:
        return SEED, "seed"
    defined = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
    if len(defined) > 20:
        defined = [*defined[:20], f"... ({len(defined) - 20} more)"]
    expected = {
        CODEC: "class Codec, or functions encode()/decode()",
        SEED: "functions run_encoding_agent() and run_decoding_agent()",
    }.get(requested, _CONTRACT_FORMS)
    raise errors.SignatureMismatch(
        f"entry module {module.__name__.removeprefix(PACKAGE + '.')} defines none of: {expected}; "
        f"it defines {', '.join(defined) or 'nothing'}",
        phase=types_pb2.PHASE_LOAD,
        expected=expected,
        actual=", ".join(defined),
    )
