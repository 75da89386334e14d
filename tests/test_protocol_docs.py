"""The protocol documents itself (issue 19): every element of protos/codecbench/v1 has a comment,
docs/protocol.md's error table says what the one code table (codecbench/errors.py) does, and the
googleapis protos shipped in protos/google/rpc match the ones Python decodes with.

``buf lint`` (STANDARD + COMMENTS) checks the comments too, in ``make lint``; the check here needs
only protoc (grpcio-tools), so it runs wherever the tests do.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_tools import protoc
from helpers import REPO

from codecbench import errors
from codecbench.protogen import PROTO_FILES, PROTO_ROOT
from codecbench.v1 import errors_pb2, types_pb2

DOC = REPO / "docs" / "protocol.md"
AGENTS_DOC = REPO / "docs" / "agents.md"


def _descriptors(files: list[str], out: Path) -> descriptor_pb2.FileDescriptorSet:
    target = out / "set.pb"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{resources.files('grpc_tools') / '_proto'}", "--include_source_info",
            f"--descriptor_set_out={target}", *files]
    assert protoc.main(args) == 0
    return descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes())


def _elements(file: descriptor_pb2.FileDescriptorProto) -> list[tuple[str, tuple[int, ...]]]:
    """Every service, RPC, message, field, oneof, enum and enum value, with its source-info path
    (field numbers of FileDescriptorProto: message_type 4, enum_type 5, service 6; DescriptorProto:
    field 2, nested_type 3, enum_type 4, oneof_decl 8; EnumDescriptorProto: value 2; method 2)."""
    found: list[tuple[str, tuple[int, ...]]] = []

    def enum(e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str) -> None:
        found.append((f"enum {scope}{e.name}", path))
        found.extend((f"enum value {v.name}", (*path, 2, i)) for i, v in enumerate(e.value))

    def message(m: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str) -> None:
        name = f"{scope}{m.name}"
        if m.options.map_entry:
            return  # map<k, v> entries are generated, not written
        found.append((f"message {name}", path))
        found.extend((f"field {name}.{f.name}", (*path, 2, i)) for i, f in enumerate(m.field))
        found.extend((f"oneof {name}.{o.name}", (*path, 8, i)) for i, o in enumerate(m.oneof_decl)
                     if not o.name.startswith("_"))  # proto3 `optional` makes a synthetic "_x" oneof
        for i, nested in enumerate(m.nested_type):
            message(nested, (*path, 3, i), f"{name}.")
        for i, e in enumerate(m.enum_type):
            enum(e, (*path, 4, i), f"{name}.")

    for i, m in enumerate(file.message_type):
        message(m, (4, i), "")
    for i, e in enumerate(file.enum_type):
        enum(e, (5, i), "")
    for i, s in enumerate(file.service):
        found.append((f"service {s.name}", (6, i)))
        found.extend((f"rpc {s.name}.{r.name}", (6, i, 2, j)) for j, r in enumerate(s.method))
    return found


def test_every_element_of_the_protocol_has_a_comment(tmp_path) -> None:
    """Friction 6: 323 elements had none, so code generated in other languages had no documentation."""
    uncommented = []
    for file in _descriptors(PROTO_FILES, tmp_path).file:
        if not file.name.startswith("codecbench/"):
            continue
        commented = {tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()}
        elements = _elements(file)
        assert len(elements) > 10, file.name
        uncommented += [f"{file.name}: {what}" for what, path in elements if path not in commented]
    assert not uncommented, "\n".join(uncommented)


def _table() -> dict[str, list[tuple[str, str]]]:
    """docs/protocol.md's error table: each reason -> [(gRPC code, safe to retry)]."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"[A-Z_]+", cells[0]) and cells[0] != "---":
            for reason in re.findall(r"`([A-Z_]+)`", cells[1]):
                rows.setdefault(reason, []).append((cells[0], cells[3]))
    return rows


def test_the_error_table_of_the_docs_is_the_code_table() -> None:
    """Friction 2 and Deliver 2: the documented code of each agent failure is the one the services
    send (codecbench/errors.py), and none of them is a code generic retry policies retry."""
    table = _table()
    retried_by_generic_policies = {"UNAVAILABLE", "ABORTED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}
    agent_kinds = [k for k in errors_pb2.ErrorKind.values()
                   if issubclass(errors.from_proto(errors_pb2.Error(kind=k)).__class__, errors.AgentError)]
    assert len(agent_kinds) == 7
    for kind in agent_kinds:
        code = errors.grpc_status_code(kind).name
        assert code not in retried_by_generic_policies, errors.kind_name(kind)
        assert table[errors.kind_name(kind)] == [(code, table[errors.kind_name(kind)][0][1])]
        assert table[errors.kind_name(kind)][0][1].startswith("no")
    for cls in (errors.InvalidArgument, errors.NotFound, errors.AlreadyExists, errors.PermissionDenied,
                errors.Unauthenticated):
        code = errors.status_code_of(cls).name
        assert (code, table[code][0][1]) in table[code], cls
    assert errors.status_code_of(errors.InternalError) == grpc.StatusCode.INTERNAL
    reasons = [value for name, value in vars(errors).items() if name.startswith("REASON_")]
    assert reasons and all(r in table for r in reasons), [r for r in reasons if r not in table]
    assert [retry for code, retry in table[errors.REASON_NO_FREE_SLOT]] == ["yes"]


def _every_kind() -> set[str]:
    return {errors.kind_name(k) for k in errors_pb2.ErrorKind.values() if k != errors_pb2.ERROR_KIND_UNSPECIFIED}


def test_the_error_kind_table_of_agents_md_lists_every_kind() -> None:
    """A new user's finding: UNSCHEDULABLE was missing from the table (and nothing noticed)."""
    text = AGENTS_DOC.read_text()
    section = text[text.index("## Error kinds"):text.index("## Limits and isolation")]
    rows = re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE)
    assert sorted(rows) == sorted(_every_kind())


def test_the_phases_of_agents_md_are_every_phase_in_order() -> None:
    """PHASE_QUEUE (and setup) were missing from the phases errors name."""
    text = " ".join(AGENTS_DOC.read_text().split())
    sentence = re.search(r"The phases, in order: (.*?)\. Only", text)
    assert sentence, "docs/agents.md lists the phases"
    listed = re.findall(r"`([a-z]+)`", re.sub(r"\([^)]*\)", "", sentence.group(1)))
    phases = sorted(p for p in types_pb2.Phase.values() if p != types_pb2.PHASE_UNSPECIFIED)
    assert listed == [errors.phase_name(p) for p in phases]


def test_the_retryable_list_of_protocol_md_is_the_code_list() -> None:
    """Every kind is said retryable or not, as :data:`errors.RETRYABLE_KINDS` makes it."""
    text = " ".join(DOC.read_text().split())
    paragraph = re.search(r"help \(`Error.retryable`\): (.*?)\.(?: |$)", text)
    assert paragraph, "docs/protocol.md says which kinds are retryable"
    said: dict[str, str] = {}
    for group in re.sub(r"\([^)]*\)", "", paragraph.group(1)).split(";"):
        names, answer = group.split(":")
        for name in names.split(","):
            said[name.strip()] = answer.strip()
    assert set(said) == _every_kind()
    assert {k for k, answer in said.items() if answer == "yes"} == {errors.kind_name(k) for k in errors.RETRYABLE_KINDS}
    assert {answer for k, answer in said.items()} == {"yes", "no"}


@pytest.mark.parametrize(("file", "module"), [("google/rpc/status.proto", status_pb2),
                                              ("google/rpc/error_details.proto", error_details_pb2)])
def test_the_shipped_googleapis_protos_are_the_ones_python_decodes_with(tmp_path, file, module) -> None:
    """Friction 1: google.rpc.Status is shipped (protos/google/rpc), and is the same message."""
    shipped = next(f for f in _descriptors([file], tmp_path).file if f.name == file)
    installed = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(installed)

    def shape(f: descriptor_pb2.FileDescriptorProto) -> dict[str, list[tuple[str, int, int, int, str]]]:
        return {m.name: [(x.name, x.number, x.type, x.label, x.type_name) for x in m.field] for m in f.message_type}

    assert shipped.package == installed.package == "google.rpc"
    assert shape(shipped) == shape(installed)
    assert "Status" in shape(shipped) or {"ErrorInfo", "BadRequest", "RetryInfo"} <= set(shape(shipped))
