"""Loading an agent and calling it by its contract, with arguments bound from real signatures.

Runs inside the sandbox child only. The old runner passed a dict where the agent expected a
device string; here every call is bound by parameter name against the agent's actual signature
before any data is processed, and a mismatch is a SIGNATURE_MISMATCH that names the function,
what the contract passes and what the agent declares.

Contracts (docs/agents.md):

- codec, class form:  ``Codec(device, **params)``, ``.encode(image) -> bytes``,
  ``.decode(bitstream) -> Tensor``
- codec, module form: ``encode(image, device, **params) -> bytes``,
  ``decode(bitstream, device, **params) -> Tensor``
- seed: ``run_encoding_agent(device[, image][, **params]) -> dict``,
  ``run_decoding_agent(device, encoding_data) -> dict`` whose ``reconstruction`` entry is the image.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _describe_signature(name: str, fn: Callable[..., Any]) -> str:
    try:
        return f"{name}{inspect.signature(fn)}"
    except (TypeError, ValueError):
        return f"{name}(?)"


@dataclass
class BoundCall:
    """A callable with the contract's arguments bound, checked against its real signature."""

    fn: Callable[..., Any]
    name: str
    data_param: str | None  # the parameter that receives the image/bitstream, if any
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, data: Any = _PLACEHOLDER) -> Any:
        """Calls the agent with the bound arguments plus ``data`` (image or bitstream), if it takes one."""
        kwargs = dict(self.kwargs)
        if self.data_param is not None:
            kwargs[self.data_param] = data
        return self.fn(**kwargs)


def bind_call(
    fn: Callable[..., Any],
    name: str,
    expected: str,
    bundle_dir: Path,
    phase: types_pb2.Phase.ValueType,
    required: dict[str, Any],
    optional: dict[str, Any] | None = None,
    data_param: str | None = None,
) -> BoundCall:
    """Binds ``required`` (and those of ``optional`` the function declares) by name.

    ``data_param`` names a required parameter whose value comes with each call (image or
    bitstream); it is bound to a placeholder now so a mismatch is found before any data.

    Raises:
        errors.SignatureMismatch: the function cannot take these arguments by these names.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise errors.SignatureMismatch(
            f"{name} has no inspectable signature ({exc})", phase=phase, expected=expected, actual=name
        ) from exc
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    kwargs = dict(required)
    for key, value in (optional or {}).items():
        if key in sig.parameters or accepts_any:
            kwargs[key] = value
    probe = dict(kwargs)
    if data_param is not None:
        probe[data_param] = _PLACEHOLDER
    try:
        sig.bind(**probe)
    except TypeError as exc:
        actual = _describe_signature(name, fn)
        raise errors.SignatureMismatch(
            f"{name} cannot be called as {expected}: {exc}; the agent declares {actual}",
            phase=phase,
            expected=expected,
            actual=actual,
            location=_location(fn, bundle_dir),
        ) from exc
    return BoundCall(fn=fn, name=name, data_param=data_param, kwargs=kwargs)


def import_entry(bundle_dir: Path, entry_module: str) -> Any:
    """Imports the agent's entry module with the bundle directory first on ``sys.path``.

    Raises:
        errors.AgentLoadError: syntax error, missing module or an exception at import, with the
            file and line in the agent's files.
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
        return importlib.import_module(entry_module)
    except BaseException as exc:  # noqa: BLE001 - SystemExit at import is the agent's fault too
        message = f"importing {entry_module}: {type(exc).__name__}: {safe_str(exc)}"
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
        f"entry module {module.__name__} defines none of: {expected}; it defines {', '.join(defined) or 'nothing'}",
        phase=types_pb2.PHASE_LOAD,
        expected=expected,
        actual=", ".join(defined),
    )
