"""The committed bindings in router/proto_gen match proto/ and describe Falco's wire contract."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from router.proto_gen.falco import outputs_pb2, schema_pb2, version_pb2
from tests.support.data import PROJECT_ROOT

COMMITTED = PROJECT_ROOT / "router" / "proto_gen"


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_proto", PROJECT_ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_bindings_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is a test dependency: pip install -e '.[test]'")
    written = _load_generator().generate(tmp_path)
    fresh = {path.relative_to(tmp_path): path.read_text(encoding="utf-8") for path in written}
    committed = {
        path.relative_to(COMMITTED): path.read_text(encoding="utf-8")
        for path in COMMITTED.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert sorted(committed) == sorted(fresh), "run `make proto` and commit router/proto_gen"
    stale = sorted(str(name) for name, text in fresh.items() if committed[name] != text)
    assert stale == [], f"stale bindings {stale}: run `make proto` and commit router/proto_gen"


def test_response_field_numbers_match_falco() -> None:
    numbers = {field.name: field.number for field in outputs_pb2.response.DESCRIPTOR.fields}
    assert numbers == {
        "time": 1,
        "priority": 2,
        "source_deprecated": 3,
        "rule": 4,
        "output": 5,
        "output_fields": 6,
        "hostname": 7,
        "tags": 8,
        "source": 9,
    }


def test_version_field_numbers_match_falco() -> None:
    numbers = {field.name: field.number for field in version_pb2.response.DESCRIPTOR.fields}
    assert numbers == {
        "version": 1,
        "major": 2,
        "minor": 3,
        "patch": 4,
        "prerelease": 5,
        "build": 6,
        "engine_minor": 7,
        "engine_fields_checksum": 8,
        "engine_major": 9,
        "engine_patch": 10,
        "engine_version": 11,
    }


@pytest.mark.parametrize(
    ("alias", "number"),
    [("EMERGENCY", 0), ("emergency", 0), ("Emergency", 0), ("Informational", 6), ("informational", 6), ("Debug", 7)],
)
def test_priority_aliases_share_numbers(alias: str, number: int) -> None:
    assert schema_pb2.priority.Value(alias) == number


def test_priority_has_no_info_alias() -> None:
    assert "Info" not in schema_pb2.priority.keys()  # noqa: SIM118 - an EnumTypeWrapper has no __contains__


@pytest.mark.parametrize(("alias", "number"), [("k8s_audit", 1), ("K8S_audit", 1), ("internal", 2), ("Plugin", 3)])
def test_source_aliases_share_numbers(alias: str, number: int) -> None:
    assert schema_pb2.source.Value(alias) == number


def test_service_method_names_match_falco() -> None:
    service = outputs_pb2.DESCRIPTOR.services_by_name["service"]
    assert service.full_name == "falco.outputs.service"
    assert {m.name: (m.client_streaming, m.server_streaming) for m in service.methods} == {
        "sub": (True, True),
        "get": (False, True),
    }
