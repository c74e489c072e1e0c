"""The mep.models classes against the two ETSI MEC 011 OpenAPI files.

Every schema under components/schemas of mep/mp1/etsi/*.yaml has a class in
``SCHEMAS`` (and nothing else does); each class has exactly the schema's member
names, the same required members, member types the YAML allows, and each enum
the same values. Every ``example``/``examples`` value in the files validates
against the class it belongs to, dropping a required member is rejected at that
member, and the wire form (``to_json``) validates back to an equal object.

Where the platform is deliberately wider than the YAML (defaults on optional
ServiceInfo members, dstInterface also taking a list) the checks still hold,
because those members are optional in the YAML too.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import GenericAlias
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from mep.models import SCHEMAS

from mep.mp1 import ETSI_DIR
API_FILES = ("MecAppSupportApi", "MecServiceMgmtApi")
REF_PREFIX = "#/components/schemas/"


def _load(name: str) -> dict[str, Any]:
    path = ETSI_DIR / f"{name}.yaml"
    assert path.is_file(), f"ETSI OpenAPI file missing: {path}"
    with path.open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    assert isinstance(doc, dict)
    return doc


DOCS: dict[str, dict[str, Any]] = {name: _load(name) for name in API_FILES}

# (file, schema name, schema) for every schema of both files; LinkType, Self and
# ProblemDetails appear in both and are checked against each.
YAML_SCHEMAS: list[tuple[str, str, dict[str, Any]]] = [
    (api, name, schema) for api, doc in DOCS.items() for name, schema in doc["components"]["schemas"].items()
]
OBJECT_SCHEMAS = [row for row in YAML_SCHEMAS if "enum" not in row[2]]
ENUM_SCHEMAS = [row for row in YAML_SCHEMAS if "enum" in row[2]]
CLASS_TO_YAML: dict[str, str] = {cls.__name__: name for name, cls in SCHEMAS.items()}


def _ids(rows: list[tuple[Any, ...]]) -> list[str]:
    return [f"{row[0]}:{row[1]}" for row in rows]


def _model(name: str) -> type[BaseModel]:
    cls = SCHEMAS[name]
    assert isinstance(cls, type) and issubclass(cls, BaseModel), f"{name} is not modelled by a pydantic model"
    return cls


def _ref_name(ref: str) -> str:
    assert ref.startswith(REF_PREFIX), f"unexpected $ref {ref}"
    return ref[len(REF_PREFIX):]


def _json_fields(cls: type[BaseModel]) -> dict[str, Any]:
    """JSON member name (alias if any) -> FieldInfo."""
    return {info.alias or name: info for name, info in cls.model_fields.items()}


def _required(cls: type[BaseModel]) -> set[str]:
    return {member for member, info in _json_fields(cls).items() if info.is_required()}


# Hand-made minimal valid bodies (required members only) for every schema
# whose model has required members; schemas without any validate from {}.
MINIMAL: dict[str, dict[str, Any]] = {
    "Self": {"self": {"href": "/mecAppSuptApi/v1/subscriptions/1"}},
    "AppReadyConfirmation": {"indication": "READY"},
    "AppTerminationConfirmation": {"operationAction": "STOPPING"},
    "AppTerminationNotification.Links": {"subscription": {"href": "/subs/1"}},
    "AppTerminationNotification": {
        "notificationType": "AppTerminationNotification",
        "operationAction": "TERMINATING",
        "maxGracefulTimeout": 10,
        "_links": {"subscription": {"href": "/subs/1"}},
    },
    "AppTerminationNotificationSubscription": {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": "http://app.example/cb",
        "_links": {"self": {"href": "/subs/1"}},
        "appInstanceId": "app-1",
    },
    "CurrentTime": {"seconds": 1577836800, "nanoSeconds": 0, "timeSourceStatus": "TRACEABLE"},
    "DestinationInterface": {"interfaceType": "IP"},
    "DnsRule": {
        "dnsRuleId": "dns-1",
        "domainName": "www.example.com",
        "ipAddressType": "IP_V4",
        "ipAddress": "192.0.2.1",
        "state": "ACTIVE",
    },
    "MecAppSuptApiSubscriptionLinkList.Links": {"self": {"href": "/subs"}},
    "MecAppSuptApiSubscriptionLinkList.Subscription": {
        "href": "/subs/1",
        "rel": "AppTerminationNotificationSubscription",
    },
    "MecAppSuptApiSubscriptionLinkList": {"_links": {"self": {"href": "/subs"}}},
    "TimingCaps.NtpServers": {
        "ntpServerAddrType": "IP_ADDRESS",
        "ntpServerAddr": "192.0.2.1",
        "minPollingInterval": 3,
        "maxPollingInterval": 17,
        "localPriority": 1,
        "authenticationOption": "NONE",
        "authenticationKeyNum": 1,
    },
    "TimingCaps_PtpMasters": {"ptpMasterIpAddress": "192.0.2.1", "ptpMasterLocalPriority": 1, "delayReqMaxRate": 10},
    "TimingCaps.TimeStamp": {"seconds": 1577836800, "nanoSeconds": 0},
    "TrafficRule": {
        "trafficRuleId": "rule-1",
        "filterType": "FLOW",
        "priority": 1,
        "trafficFilter": [{"dstPort": ["80"]}],
        "action": "DROP",
        "state": "ACTIVE",
    },
    "TunnelInfo": {"tunnelType": "GTP_U"},
    "CategoryRef": {"href": "/catalogue/1", "id": "cat-1", "name": "RNI", "version": "1"},
    "EndPointInfo.Address": {"host": "192.0.2.1", "port": 8080},
    "EndPointInfo.Addresses": {"addresses": [{"host": "192.0.2.1", "port": 8080}]},
    "EndPointInfo.Alternative": {"alternative": {}},
    "EndPointInfo.Uris": {"uris": ["/svc/v1"]},
    "MecServiceMgmtApiSubscriptionLinkList.Links": {"self": {"href": "/subs"}},
    "MecServiceMgmtApiSubscriptionLinkList.Subscription": {
        "href": "/subs/1",
        "rel": "SerAvailabilityNotificationSubscription",
    },
    "MecServiceMgmtApiSubscriptionLinkList": {"_links": {"self": {"href": "/subs"}}},
    "SecurityInfo.OAuth2Info": {"grantTypes": ["OAUTH2_CLIENT_CREDENTIALS"], "tokenEndpoint": "/token"},
    "SerAvailabilityNotificationSubscription": {
        "subscriptionType": "SerAvailabilityNotificationSubscription",
        "callbackReference": "http://app.example/cb",
        "_links": {"self": {"href": "/subs/1"}},
    },
    "ServiceAvailabilityNotification": {
        "notificationType": "SerAvailabilityNotificationSubscription",
        "serviceReferences": [
            {"serName": "svc", "serInstanceId": "svc-1", "state": "ACTIVE", "changeType": "ADDED"},
        ],
        "_links": {"subscription": {"href": "/subs/1"}},
    },
    "ServiceAvailabilityNotification.ServiceReferences": {
        "serName": "svc",
        "serInstanceId": "svc-1",
        "state": "ACTIVE",
        "changeType": "ADDED",
    },
    "ServiceInfo": {
        "serName": "svc",
        "version": "1",
        "state": "ACTIVE",
        "transportInfo": {
            "id": "t-1",
            "name": "REST",
            "type": "REST_HTTP",
            "protocol": "HTTP",
            "version": "2.0",
            "endpoint": {"uris": ["/svc/v1"]},
            "security": {},
        },
        "serializer": "JSON",
    },
    "Subscription": {"subscription": {"href": "/subs/1"}},
    "TransportInfo": {
        "id": "t-1",
        "name": "REST",
        "type": "REST_HTTP",
        "protocol": "HTTP",
        "version": "2.0",
        "endpoint": {"addresses": [{"host": "192.0.2.1", "port": 8080}]},
        "security": {},
    },
}


def _minimal(name: str) -> dict[str, Any]:
    return copy.deepcopy(MINIMAL.get(name, {}))


# --- examples: every `example`/`examples` value found anywhere in the files ---


@dataclass(frozen=True)
class Example:
    id: str
    kind: str  # "enum", "property" or "body" (a whole object, or an array of them)
    schema: str  # YAML schema name (of the items, for an array body)
    prop: str  # property name for kind == "property"
    target: Any  # type validated against: a model, StrEnum, or list[model]
    value: Any


def _media_target(schema: dict[str, Any]) -> tuple[str, Any] | None:
    """The schema of a request/response body: a $ref, or an array of one."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return name, SCHEMAS[name]
    if schema.get("type") == "array" and "$ref" in schema.get("items", {}):
        name = _ref_name(schema["items"]["$ref"])
        return name, GenericAlias(list, (SCHEMAS[name],))  # list[<model>]
    return None


def _values(key: str, node: Any, media: bool) -> list[Any] | None:
    """The example values under one `example`/`examples` key, or None if unrecognised."""
    if key == "example":
        return [node]
    if media:  # Media Type Object: name -> Example Object {value: ...}
        if isinstance(node, dict) and all(isinstance(e, dict) and "value" in e for e in node.values()):
            return [e["value"] for e in node.values()]
        return None
    return list(node) if isinstance(node, list) else None


def _collect() -> tuple[list[Example], list[str]]:
    found: list[Example] = []
    unclassified: list[str] = []

    def add(where: list[Any], key: str, node: Any, kind: str, schema: str, prop: str, target: Any, media: bool) -> None:
        values = _values(key, node, media)
        if values is None:
            unclassified.append("/".join(map(str, where)))
            return
        for i, value in enumerate(values):
            found.append(Example(f"{'/'.join(map(str, where))}[{i}]", kind, schema, prop, target, value))

    def walk(api: str, node: Any, where: list[Any]) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(api, item, [*where, i])
            return
        if not isinstance(node, dict):
            return
        for key, child in node.items():
            here = [*where, key]
            if key in ("example", "examples"):
                classify(api, node, key, child, here)
            else:
                walk(api, child, here)

    def classify(api: str, parent: dict[str, Any], key: str, node: Any, where: list[Any]) -> None:
        path = where[1:-1]  # without the file name and the key itself
        if len(path) == 3 and path[:2] == ["components", "schemas"]:
            name = path[2]
            kind = "enum" if "enum" in parent else "body"
            add(where, key, node, kind, name, "", SCHEMAS[name], media=False)
        elif len(path) == 5 and path[:2] == ["components", "schemas"] and path[3] == "properties":
            add(where, key, node, "property", path[2], path[4], SCHEMAS[path[2]], media=False)
        elif path and path[0] == "paths" and "content" in path:
            media = path[-1] != "schema"
            body = parent.get("schema") if media else parent
            target = _media_target(body) if isinstance(body, dict) else None
            if target is None:
                unclassified.append("/".join(map(str, where)))
                return
            add(where, key, node, "body", target[0], "", target[1], media=media)
        else:
            unclassified.append("/".join(map(str, where)))

    for api, doc in DOCS.items():
        walk(api, doc, [api])
    return found, unclassified


EXAMPLES, UNCLASSIFIED = _collect()


def _examples(kind: str) -> list[Example]:
    return [e for e in EXAMPLES if e.kind == kind]


def _validate(target: Any, value: Any, **kw: Any) -> Any:
    return TypeAdapter(target).validate_python(value, **kw)


def _unknown_locs(target: Any, value: Any) -> list[tuple[Any, ...]]:
    """Locations of members the models do not know, found by validating with extra='forbid'."""
    try:
        _validate(target, value, extra="forbid")
    except ValidationError as exc:
        errors = exc.errors()
        assert all(err["type"] == "extra_forbidden" for err in errors), errors
        return [tuple(err["loc"]) for err in errors]
    return []


def _without(value: Any, locs: list[tuple[Any, ...]]) -> Any:
    """A copy of value with the members at locs removed (union tags in a loc are skipped)."""
    value = copy.deepcopy(value)
    for loc in locs:
        node = value
        for step in loc[:-1]:
            if isinstance(node, dict) and step in node or isinstance(node, list) and isinstance(step, int):
                node = node[step]
        assert isinstance(node, dict) and loc[-1] in node, f"cannot place unknown member {loc}"
        del node[loc[-1]]
    return value


def _is_within(expected: Any, actual: Any) -> bool:
    """Every member of expected is in actual with the same value (actual may add defaults)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _is_within(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_is_within(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return type(expected) is type(actual) and expected == actual


def _wire(result: Any) -> Any:
    if isinstance(result, list):
        return [_wire(item) for item in result]
    assert isinstance(result, BaseModel)
    return result.to_json()  # type: ignore[attr-defined]


# --- schema names, members, required members, types, enums -----------------


def test_every_yaml_schema_has_a_model_and_vice_versa() -> None:
    yaml_names = {name for _, name, _ in YAML_SCHEMAS}
    assert sorted(yaml_names - SCHEMAS.keys()) == []
    assert sorted(SCHEMAS.keys() - yaml_names) == []


@pytest.mark.parametrize(("api", "name", "schema"), YAML_SCHEMAS, ids=_ids(YAML_SCHEMAS))
def test_schema_kind_matches_class_kind(api: str, name: str, schema: dict[str, Any]) -> None:
    cls = SCHEMAS[name]
    if "enum" in schema:
        assert schema.get("type") == "string"
        assert issubclass(cls, StrEnum), f"{name} is an enum in {api} but {cls.__name__} is not a StrEnum"
    else:
        assert schema.get("type") == "object"
        assert issubclass(cls, BaseModel), f"{name} is an object in {api} but {cls.__name__} is not a model"


@pytest.mark.parametrize(("api", "name", "schema"), ENUM_SCHEMAS, ids=_ids(ENUM_SCHEMAS))
def test_enum_values_equal_yaml(api: str, name: str, schema: dict[str, Any]) -> None:
    cls = SCHEMAS[name]
    assert issubclass(cls, StrEnum)
    assert [member.value for member in cls] == schema["enum"]


@pytest.mark.parametrize(("api", "name", "schema"), OBJECT_SCHEMAS, ids=_ids(OBJECT_SCHEMAS))
def test_member_names_equal_yaml_properties(api: str, name: str, schema: dict[str, Any]) -> None:
    assert set(_json_fields(_model(name))) == set(schema.get("properties", {}))


@pytest.mark.parametrize(("api", "name", "schema"), OBJECT_SCHEMAS, ids=_ids(OBJECT_SCHEMAS))
def test_required_members_equal_yaml_required(api: str, name: str, schema: dict[str, Any]) -> None:
    assert _required(_model(name)) == set(schema.get("required", []))


def _yaml_kinds(prop: dict[str, Any]) -> set[Any]:
    if "$ref" in prop:
        return {("ref", _ref_name(prop["$ref"]))}
    for key in ("oneOf", "anyOf"):
        if key in prop:
            return set().union(*(_yaml_kinds(p) for p in prop[key]))
    if prop.get("type") == "array":
        return {("array", kind) for kind in _yaml_kinds(prop["items"])}
    return {(prop["type"],)}


def _model_kinds(prop: dict[str, Any]) -> set[Any]:
    if "$ref" in prop:
        def_name = prop["$ref"].rsplit("/", 1)[-1]
        return {("ref", CLASS_TO_YAML.get(def_name, f"<unmapped {def_name}>"))}
    if "anyOf" in prop:
        return set().union(*(_model_kinds(p) for p in prop["anyOf"] if p.get("type") != "null"))
    if prop.get("type") == "array":
        return {("array", kind) for kind in _model_kinds(prop.get("items", {}))}
    return {(prop.get("type", "any"),)}


@pytest.mark.parametrize(("api", "name", "schema"), OBJECT_SCHEMAS, ids=_ids(OBJECT_SCHEMAS))
def test_member_types_accept_yaml_types(api: str, name: str, schema: dict[str, Any]) -> None:
    """Each member accepts what the YAML types it as: same $ref target, scalar type or array item."""
    model_props = _model(name).model_json_schema(by_alias=True, mode="validation").get("properties", {})
    for member, prop in schema.get("properties", {}).items():
        wanted, offered = _yaml_kinds(prop), _model_kinds(model_props[member])
        assert wanted <= offered, f"{name}.{member}: YAML {sorted(wanted)} not within model {sorted(offered)}"


def _array_schema(prop: dict[str, Any]) -> dict[str, Any]:
    options: list[dict[str, Any]] = prop.get("anyOf", [prop])
    for option in options:
        if option.get("type") == "array":
            return option
    raise AssertionError(f"no array in {prop}")


@pytest.mark.parametrize(("api", "name", "schema"), OBJECT_SCHEMAS, ids=_ids(OBJECT_SCHEMAS))
def test_array_item_counts_match_yaml(api: str, name: str, schema: dict[str, Any]) -> None:
    """minItems is the YAML's; a YAML maxItems is kept (the platform may bound other lists)."""
    model_props = _model(name).model_json_schema(by_alias=True, mode="validation").get("properties", {})
    for member, prop in schema.get("properties", {}).items():
        if prop.get("type") != "array":
            continue
        array = _array_schema(model_props[member])
        assert array.get("minItems", 0) == prop.get("minItems", 0), f"{name}.{member}"
        if "maxItems" in prop:
            assert array.get("maxItems") == prop["maxItems"], f"{name}.{member}"


def test_minimal_table_covers_exactly_the_models_with_required_members() -> None:
    with_required = {name for _, name, _ in OBJECT_SCHEMAS if _required(_model(name))}
    assert set(MINIMAL) == with_required


@pytest.mark.parametrize(("api", "name", "schema"), OBJECT_SCHEMAS, ids=_ids(OBJECT_SCHEMAS))
def test_minimal_body_validates(api: str, name: str, schema: dict[str, Any]) -> None:
    body = _minimal(name)
    model = _model(name).model_validate(body)
    assert _is_within(body, model.to_json())  # type: ignore[attr-defined]


# --- examples -----------------------------------------------------------


def test_every_example_in_the_yaml_is_checked() -> None:
    assert UNCLASSIFIED == [], "examples at locations this test does not know how to check"
    assert {e.kind for e in EXAMPLES} == {"enum", "property", "body"}
    # Every enum schema carries an example, and so do the TrafficRule, DnsRule and ServiceInfo bodies.
    assert {e.schema for e in _examples("enum")} == {name for _, name, _ in ENUM_SCHEMAS}
    assert {e.schema for e in _examples("body")} >= {"TrafficRule", "DnsRule", "ServiceInfo"}
    assert len(_examples("property")) >= 50


@pytest.mark.parametrize("example", _examples("enum"), ids=lambda e: e.id)
def test_enum_example_is_a_member(example: Example) -> None:
    assert example.target(example.value).value == example.value


@pytest.mark.parametrize("example", _examples("property"), ids=lambda e: e.id)
def test_property_example_validates_in_its_schema(example: Example) -> None:
    """The example, put into an otherwise minimal valid body, is accepted and serialised unchanged."""
    body = _minimal(example.schema)
    body[example.prop] = example.value
    model = _model(example.schema).model_validate(body)
    assert model.to_json()[example.prop] == example.value  # type: ignore[attr-defined]


@pytest.mark.parametrize("example", _examples("body"), ids=lambda e: e.id)
def test_body_example_validates_and_serialises_back(example: Example) -> None:
    result = _validate(example.target, example.value)
    known = _without(example.value, _unknown_locs(example.target, example.value))
    assert _is_within(known, _wire(result))


def test_unknown_members_in_examples_are_ignored() -> None:
    """The TrafficRule examples carry serName, which the schema does not list."""
    rules = [e for e in _examples("body") if e.schema == "TrafficRule" and isinstance(e.value, dict)]
    assert rules
    for example in rules:
        assert "serName" in example.value
        assert _unknown_locs(example.target, example.value) == [("serName",)]
        wire = _validate(example.target, example.value).to_json()
        assert "serName" not in wire
        assert wire["trafficRuleId"] == example.value["trafficRuleId"]


def test_tunnel_address_question_mark_examples_are_accepted() -> None:
    tunnel = _model("TunnelInfo").model_validate({"tunnelType": "GRE", "tunnelDstAddress": "?", "tunnelSrcAddress": "?"})
    assert tunnel.to_json() == {"tunnelType": "GRE", "tunnelDstAddress": "?", "tunnelSrcAddress": "?"}  # type: ignore[attr-defined]


# --- required members ---------------------------------------------------


def _valid_bodies() -> list[tuple[str, str, dict[str, Any]]]:
    """(schema, source, body): the minimal table, plus each object found in a body example."""
    bodies = [(name, "minimal", _minimal(name)) for name in MINIMAL]
    for example in _examples("body"):
        items = example.value if isinstance(example.value, list) else [example.value]
        bodies += [(example.schema, f"{example.id}#{i}", copy.deepcopy(item)) for i, item in enumerate(items)]
    return bodies


VALID_BODIES = _valid_bodies()
REMOVALS = [
    (name, source, body, member)
    for name, source, body in VALID_BODIES
    for member in sorted(_required(_model(name)))
]


@pytest.mark.parametrize(
    ("name", "source", "body", "member"), REMOVALS, ids=[f"{r[0]}-{r[3]}-{r[1]}" for r in REMOVALS]
)
def test_missing_required_member_is_rejected_at_that_member(
    name: str, source: str, body: dict[str, Any], member: str
) -> None:
    cls = _model(name)
    cls.model_validate(body)  # the body is valid as given
    assert member in body
    body = {k: v for k, v in body.items() if k != member}  # parameters are shared: never mutate
    with pytest.raises(ValidationError) as info:
        cls.model_validate(body)
    assert any(err["loc"] == (member,) and err["type"] == "missing" for err in info.value.errors()), (
        info.value.errors()
    )


def test_removals_cover_every_required_member() -> None:
    covered = {(r[0], r[3]) for r in REMOVALS}
    wanted = {(name, member) for _, name, _ in OBJECT_SCHEMAS for member in _required(_model(name))}
    assert covered == wanted


# --- serialisation --------------------------------------------------------


@pytest.mark.parametrize(("name", "source", "body"), VALID_BODIES, ids=[f"{b[0]}-{b[1]}" for b in VALID_BODIES])
def test_to_json_round_trips(name: str, source: str, body: dict[str, Any]) -> None:
    cls = _model(name)
    model = cls.model_validate(body)
    wire = model.to_json()  # type: ignore[attr-defined]
    again = cls.model_validate(wire)
    assert again == model
    assert again.to_json() == wire  # type: ignore[attr-defined]
    assert cls.model_validate_json(json.dumps(wire)) == model


LINKED = sorted(name for _, name, schema in OBJECT_SCHEMAS if "_links" in schema.get("properties", {}))


@pytest.mark.parametrize("name", LINKED)
def test_links_serialised_under_alias(name: str) -> None:
    cls = _model(name)
    model = cls.model_validate(_minimal(name))
    assert "_links" in model.to_json() and "links" not in model.to_json()  # type: ignore[attr-defined]
    assert "_links" in model.model_dump() and "_links" in json.loads(model.model_dump_json())
    by_name = {("links" if k == "_links" else k): v for k, v in _minimal(name).items()}
    assert cls.model_validate(by_name) == model  # populate by field name too


def test_only_links_is_aliased() -> None:
    aliased = {
        (name, info.alias) for _, name, _ in OBJECT_SCHEMAS for info in _model(name).model_fields.values() if info.alias
    }
    assert aliased == {(name, "_links") for name in LINKED}
    assert len(LINKED) == 6
