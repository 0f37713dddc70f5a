"""docs/api.md, the wire contract in words, against what the server really is.

The app's OpenAPI document and the stream's JSON Schema (``GET /schema/messages``) are the
truth; docs/api.md must list exactly their routes, parameters (type, range, default),
status codes, bodies and fields (type, nullability, enum values, bounds), plus the close codes
of the stream and the default limits it names. The route table's access column is checked
against real servers with a token: what each route does without it. Each test collects every
difference, so a failure lists all that the document must gain or lose.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from starlette.routing import Mount

from heartsim.api import create_app
from heartsim.api.ws import HEARTBEAT_PATH
from heartsim.schema import SCHEMA_VERSION, message_json_schema
from heartsim.server import HeartsimServer

from .conftest import ServerFactory

DOC = Path(__file__).parents[2] / "docs" / "api.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: FastAPI's own 422 schema, which it lists for routes that do not declare their 422; heartsim
#: answers every 422 with ValidationErrorBody (documented), never with these.
FASTAPI_DEFAULT_422 = frozenset({"HTTPValidationError", "ValidationError"})
#: Schema keywords that bound a value: docs/api.md states each bound.
BOUNDS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
)
CLOSE_CODE_MODULES = ("heartsim.hub", "heartsim.api.ws")
#: Pages served beside the OpenAPI document (not operations of it).
PAGES = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")}
TOKEN = "doc-test-token"
FOREIGN_ORIGIN = "http://elsewhere.invalid"


# ----- reading docs/api.md ---------------------------------------------------------------------
@dataclass
class Block:
    """A heading and the lines up to the next heading."""

    level: int
    title: str
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def blocks(text: str) -> list[Block]:
    out = [Block(0, "")]
    for line in text.splitlines():
        heading = re.match(r"^(#+)\s+(.*)$", line)
        if heading:
            out.append(Block(len(heading[1]), heading[2].strip()))
        else:
            out[-1].lines.append(line)
    return out


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table_rows(lines: list[str]) -> list[list[str]]:
    """The rows of every table in ``lines`` (header and separator rows left out)."""
    rows = [cells(line) for line in lines if line.startswith("|")]
    return [row for row in rows if not set("".join(row)) <= set("-: ") and "`" in row[0]]


def code(cell: str) -> str | None:
    """The text of a cell that is one code span, e.g. ``stress_level``."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    return match[1] if match else None


def mentions_number(text: str, value: float) -> bool:
    """Whether ``text`` has ``value`` as a number of its own (``1`` does not match ``10``)."""
    forms = {f"{value:g}"}
    if float(value).is_integer():
        forms.add(str(int(value)))
    return any(re.search(rf"(?<![\w.]){re.escape(f)}(?![\w]|\.\d)", text) for f in forms)


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app()


@pytest.fixture(scope="module")
def spec(app: Any) -> dict[str, Any]:
    return app.openapi()


# ----- reading the schemas ---------------------------------------------------------------------
def ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def alternatives(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema's ``anyOf``/``oneOf`` members, or the schema itself."""
    members = schema.get("anyOf") or schema.get("oneOf")
    return [m for s in members for m in alternatives(s)] if members else [schema]


def nullable(schema: dict[str, Any]) -> bool:
    return any(member.get("type") == "null" for member in alternatives(schema))


def type_words(schema: dict[str, Any]) -> set[str]:
    """What the type cell must name: JSON types (and item types of arrays), model names."""
    words: set[str] = set()
    for member in alternatives(schema):
        name = ref_name(member)
        kind = member.get("type")
        if name:
            words.add(name)
        elif kind == "array":
            words.add("array")
            words |= type_words(member.get("items", {}))
        elif kind and kind != "null":
            words.add(kind)
        elif not member:
            words.add("any")
    return words


def bounds(schema: dict[str, Any]) -> list[tuple[str, float]]:
    """Every bound of the schema, its members and its items."""
    out = []
    for member in alternatives(schema):
        out += [(key, member[key]) for key in BOUNDS if key in member]
        if "items" in member:
            out += [(f"items.{key}", value) for key, value in bounds(member["items"])]
    return out


def choices(schema: dict[str, Any]) -> list[Any]:
    """The values an enum or constant allows."""
    out: list[Any] = []
    for member in alternatives(schema):
        out += member.get("enum", [])
        if "const" in member:
            out.append(member["const"])
    return out


def referenced_models(schema: dict[str, Any]) -> set[str]:
    return {name for member in alternatives(schema) if (name := ref_name(member))}


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }


def check_value(
    where: str, text: str, schema: dict[str, Any], type_cell: str, *, json: bool = True
) -> list[str]:
    """What the documentation of one value (a JSON field, or a parameter: ``json=False``,
    where "null" means "not sent") gets wrong."""
    problems = []
    missing_types = sorted(w for w in type_words(schema) if w not in type_cell)
    if missing_types:
        problems.append(f"{where}: type should name {missing_types} (has {type_cell!r})")
    if json and nullable(schema) != ("null" in type_cell):
        says = "can be null" if nullable(schema) else "is never null"
        problems.append(f"{where}: the value {says}; the type cell says {type_cell!r}")
    for key, value in bounds(schema):
        if not mentions_number(text, value):
            problems.append(f"{where}: {key} {value!r} not stated")
    for value in choices(schema):
        if str(value) not in text:
            problems.append(f"{where}: allowed value {value!r} not listed")
    return problems


def report(problems: list[str]) -> str:
    return f"docs/api.md is out of date ({len(problems)}):\n" + "\n".join(problems)


# ----- routes ----------------------------------------------------------------------------------
def route_table(doc: str) -> dict[tuple[str, str], str]:
    """(METHOD, path) → auth, from the route table."""
    rows = {}
    for line in doc.splitlines():
        row = cells(line) if line.startswith("|") else []
        if len(row) >= 3 and code(row[0]) in (*METHODS, "WS") and code(row[1]):
            rows[(code(row[0]), code(row[1]))] = row[2]
    return rows


def _refused(response: httpx.Response) -> bool:
    return response.status_code in (401, 403)


def _no_such_route(response: httpx.Response) -> bool:
    if response.status_code == 405:
        return True
    return response.status_code == 404 and response.json().get("error") == "Not found"


async def observed_auth(
    method: str, path: str, public: HeartsimServer, private: HeartsimServer
) -> str:
    """What a route does without the token, on servers that have one: ``control`` (refuses
    a foreign ``Origin``), ``read`` (refuses only when public reads are off), ``public``;
    ``missing`` if no such route is served."""
    url = path.replace("{person_id}", public.engine.default_person)
    async with httpx.AsyncClient(timeout=5) as http:
        foreign = await http.request(method, public.url + url, headers={"Origin": FOREIGN_ORIGIN})
        if _no_such_route(foreign):
            return "missing"
        if foreign.status_code == 403:
            return "control"
        closed = await http.request(method, private.url + url)
        return "read" if _refused(closed) else "public"


async def stream_refuses_without_token(server: HeartsimServer) -> bool:
    """Whether the stream refuses a client without the token (at the handshake or by 1008)."""
    try:
        async with websockets.connect(server.ws_url, open_timeout=5) as ws:
            await asyncio.wait_for(ws.recv(), 5)
    except websockets.InvalidStatus as exc:
        return exc.response.status_code in (401, 403)
    except websockets.ConnectionClosed as exc:
        return exc.rcvd is not None and exc.rcvd.code == 1008
    return False


async def test_the_route_table_lists_every_route_with_its_access_check(
    doc: str, make_server: ServerFactory
) -> None:
    public = await make_server(token=TOKEN, public_read=True)
    private = await make_server(token=TOKEN, public_read=False)
    documented = route_table(doc)
    expected = set(operations(public.app.openapi())) | PAGES | {("WS", HEARTBEAT_PATH)}
    problems = [
        f"route {m} {p} is not in the route table" for m, p in sorted(expected - set(documented))
    ]
    for (method, path), auth in documented.items():
        if method == "WS":
            refuses = path == HEARTBEAT_PATH and await stream_refuses_without_token(public)
            real = "stream" if refuses else "not a token-checked stream"
        else:
            real = await observed_auth(method, path, public, private)
        if real != auth:
            problems.append(f"route {method} {path}: the table says {auth!r}, it is {real!r}")
    for mount in (r for r in public.app.routes if isinstance(r, Mount)):
        if f"`{mount.path}/`" not in doc:
            problems.append(f"the files under {mount.path}/ are not mentioned")
    assert not problems, report(problems)


# ----- operations ------------------------------------------------------------------------------
def sections(doc: str) -> dict[tuple[str, str], Block]:
    """(METHOD, path) → the section whose heading names it."""
    out = {}
    for block in blocks(doc):
        for method, path in re.findall(rf"`({'|'.join(METHODS)}) (/[^`]*)`", block.title):
            out[(method, path)] = block
    return out


def status_codes(block: Block) -> set[str]:
    """The status codes of the section's ``Status:`` paragraph."""
    text = block.text
    start = text.find("Status:")
    if start < 0:
        return set()
    paragraph = text[start:].split("\n\n", 1)[0]
    return set(re.findall(r"(?<![\w.])([1-5]\d\d)(?!\w|\.\d)", paragraph))


def parameter_rows(block: Block) -> dict[str, list[str]]:
    """Parameter name → its table row (name, in, type and range, meaning)."""
    rows = {}
    for row in table_rows(block.lines):
        if len(row) >= 4 and row[1] in ("query", "path", "header", "cookie") and code(row[0]):
            rows[code(row[0])] = row
    return rows


def test_every_operation_has_its_parameters_status_codes_and_bodies(
    doc: str, spec: dict[str, Any]
) -> None:
    ops, found = operations(spec), sections(doc)
    problems = [
        f"{m} {p} has no section (### `{m} {p}`)" for m, p in sorted(ops) if (m, p) not in found
    ]
    problems += [
        f"section for {m} {p}, which does not exist" for m, p in found if (m, p) not in ops
    ]
    by_block: dict[int, list[tuple[str, str]]] = {}
    for key, block in found.items():
        if key in ops:
            by_block.setdefault(id(block), []).append(key)
    blocks_by_id = {id(block): block for block in found.values()}
    for block_id, keys in by_block.items():
        block = blocks_by_id[block_id]
        name = " · ".join(f"{m} {p}" for m, p in keys)
        # Status codes: exactly those of the operations.
        expected = set().union(*(set(ops[key]["responses"]) for key in keys))
        written = status_codes(block)
        if written != expected:
            problems.append(
                f"{name}: status codes to add {sorted(expected - written)}, "
                f"to remove {sorted(written - expected)}"
            )
        # Parameters: exactly those of the operations, each with type, bounds and default.
        rows = parameter_rows(block)
        params: dict[str, dict[str, Any]] = {}
        for key in keys:
            for param in ops[key].get("parameters", []):
                params.setdefault(param["name"], param)
        problems += [f"{name}: parameter {n!r} not documented" for n in params if n not in rows]
        problems += [f"{name}: parameter {n!r} does not exist" for n in rows if n not in params]
        for pname, param in params.items():
            if pname not in rows:
                continue
            row = rows[pname]
            where = f"{name} ?{pname}"
            if row[1] != param["in"]:
                problems.append(f"{where}: it is a {param['in']} parameter, not {row[1]}")
            problems += check_value(where, row[2], param["schema"], row[2], json=False)
            default = param["schema"].get("default")
            if isinstance(default, int | float) and not mentions_number(row[2], default):
                problems.append(f"{where}: default {default!r} not stated")
            if param.get("required") and "required" not in row[2]:
                problems.append(f"{where}: required, not said so")
        # Bodies: every model sent or answered is named in the section.
        for key in keys:
            body = ops[key].get("requestBody", {}).get("content", {})
            answers = [
                response.get("content", {})
                for status, response in ops[key]["responses"].items()
                if status.startswith("2")
            ]
            for content in [body, *answers]:
                for media in content.values():
                    for model in referenced_models(media.get("schema", {})):
                        if f"`{model}`" not in block.text:
                            problems.append(f"{name}: body {model} not named")
    assert not problems, report(problems)


# ----- bodies and messages ---------------------------------------------------------------------
def models(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Model name → its schemas (OpenAPI components and stream messages)."""
    out: dict[str, list[dict[str, Any]]] = {}
    sources = [spec["components"]["schemas"], message_json_schema()["$defs"]]
    for source in sources:
        for name, schema in source.items():
            if name not in FASTAPI_DEFAULT_422:
                out.setdefault(name, []).append(schema)
    return out


def model_tables(doc: str) -> dict[str, dict[str, list[str]]]:
    """Model name → field → row (field, type, unit and range, meaning)."""
    out = {}
    for block in blocks(doc):
        name = code(block.title)
        if block.level == 4 and name:
            out[name] = {code(row[0]): row for row in table_rows(block.lines) if code(row[0])}
    return out


def test_every_body_and_message_field_is_documented_with_its_type_and_range(
    doc: str, spec: dict[str, Any]
) -> None:
    real, documented = models(spec), model_tables(doc)
    problems = [f"model {n} has no table (#### `{n}`)" for n in sorted(real) if n not in documented]
    problems += [f"model {n} is documented but does not exist" for n in documented if n not in real]
    for name in sorted(set(real) & set(documented)):
        rows = documented[name]
        for schema in real[name]:
            properties = schema.get("properties", {})
            problems += [f"{name}.{f}: not documented" for f in properties if f not in rows]
            problems += [f"{name}.{f}: does not exist" for f in rows if f not in properties]
            for fname, fschema in properties.items():
                if fname in rows:
                    row = rows[fname]
                    problems += check_value(f"{name}.{fname}", " | ".join(row), fschema, row[1])
    assert not problems, report(sorted(set(problems)))


def test_the_stream_schema_version_is_the_current_one(doc: str) -> None:
    stated = re.findall(r"schema version `([^`]+)`", doc)
    assert stated and set(stated) == {SCHEMA_VERSION}, f"docs/api.md states {stated}"


# ----- stream close codes and limits -----------------------------------------------------------
def close_codes() -> dict[int, str]:
    """Every close code the server uses: the ``CLOSE_*`` constants of the stream's modules."""
    out = {}
    for module_name in CLOSE_CODE_MODULES:
        for name, value in vars(importlib.import_module(module_name)).items():
            if name.startswith("CLOSE_") and isinstance(value, int):
                out[value] = f"{module_name}.{name}"
    return out


def test_the_close_code_table_lists_exactly_the_codes_the_server_uses(doc: str) -> None:
    section = next(b for b in blocks(doc) if b.title == "Close codes")
    documented = {int(code(row[0]) or 0) for row in table_rows(section.lines)}
    used = close_codes()
    problems = [
        f"close code {c} ({used[c]}) not documented" for c in sorted(set(used) - documented)
    ]
    problems += [
        f"close code {c} documented but never used" for c in sorted(documented - set(used))
    ]
    assert not problems, report(problems)


def default_of(setting: str) -> Any:
    """The default of ``module.Class.attribute`` or ``module.callable(parameter)``."""
    call = re.fullmatch(r"(.+)\((\w+)\)", setting)
    path = call[1] if call else setting
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)
        break
    else:
        raise AssertionError(f"cannot import {setting}")
    return inspect.signature(obj).parameters[call[2]].default if call else obj


def test_the_limits_table_states_the_real_defaults(doc: str) -> None:
    section = next(b for b in blocks(doc) if b.title == "Limits and defaults")
    rows = [row for row in table_rows(section.lines) if code(row[0])]
    assert len(rows) >= 10
    problems = []
    for row in rows:
        setting, written = code(row[0]), row[1]
        assert setting is not None
        real = default_of(setting)
        same = (
            mentions_number(written, real)
            if isinstance(real, int | float)
            else str(real) == written
        )
        if not same:
            problems.append(f"{setting}: default is {real!r}, docs/api.md says {written!r}")
    assert not problems, report(problems)
