"""The JSON API, described by OpenAPI 3 at ``/api/openapi.json``.

    curl -s localhost:8000/api/translate -H 'Content-Type: application/json' \\
         -d '{"question": "How many students are there?", "database": "student_1"}'

Input is validated with pydantic; every bad input gets a 4xx JSON answer ``{"error": ..., "status": ...}``.
"""

from __future__ import annotations

from typing import Any

from typing import Literal

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from t2sql.databases.charts import chart_kind, chart_svg, result_csv

from webui.answering import MAX_QUESTION_CHARS, MAX_SQL_CHARS, ModelUnavailable, TargetError, cell, service

bp = Blueprint("api", __name__, url_prefix="/api")


class TranslateRequest(BaseModel):
    """A question about a registered database, or about pasted CREATE TABLE statements (exactly one)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={
        "oneOf": [{"required": ["database"]}, {"required": ["schema"]}]})

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="The question in English.")
    # Absent rather than null: a null is refused like any other non-string.
    database: str = Field(default=None, min_length=1, max_length=200,
                          description="Name of a registered database (see /api/databases).")
    schema_text: str = Field(default=None, alias="schema", min_length=1, max_length=100_000,
                             description="CREATE TABLE statements; the SQL is checked on an empty schema.")

    @model_validator(mode="after")
    def _one_target(self) -> "TranslateRequest":
        if (self.database is None) == (self.schema_text is None):
            raise ValueError("give exactly one of 'database' and 'schema'")
        return self


class TranslateResponse(BaseModel):
    id: int = Field(description="Id of the logged question.")
    sql: str
    latency_ms: float = Field(description="Model latency (cache lookup time when cached).")
    model: str = Field(description="Run id of the model that answered.")
    cached: bool
    database: str
    executes: bool = Field(description="Whether the SQL ran without error on the database (or empty schema).")
    error: str | None = None
    dialect: str = Field(default="sqlite", description="SQL dialect of `sql` (the database's engine).")


class QueryRequest(BaseModel):
    """SQL to run read-only on a registered database."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS, description="One reading query in the database's dialect.")
    database: str = Field(min_length=1, max_length=200)
    format: Literal["json", "csv", "svg"] = Field(
        default="json", description="json: rows; csv: a CSV download; svg: the result's chart (422 when none fits).")


class QueryResponse(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(description="More rows exist than the row cap.")
    elapsed_ms: float
    chart: str | None = Field(default=None, description="The chart that fits the result: bar, line or null.")


class ErrorResponse(BaseModel):
    error: str
    status: int
    error_kind: str | None = None
    details: list[dict[str, Any]] | None = None


def _error(status: int, message: str, **extra):
    return jsonify(error=message, status=status, **{k: v for k, v in extra.items() if v is not None}), status


def _body(model: type[BaseModel]):
    """The validated JSON body, or an error response."""
    if not request.is_json:
        return None, _error(415, "send a JSON body with Content-Type: application/json")
    data = request.get_json(silent=True)
    if data is None:
        return None, _error(400, "the body is not valid JSON")
    if not isinstance(data, dict):
        return None, _error(400, "the body must be a JSON object")
    try:
        return model.model_validate(data), None
    except ValidationError as exc:
        details = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
                   for e in exc.errors(include_url=False, include_context=False, include_input=False)]
        first = details[0]
        where = ".".join(first["loc"]) or "body"
        return None, _error(422, f"{where}: {first['msg']}", details=details)


@bp.route("/translate", methods=("POST",))
def translate():
    body, err = _body(TranslateRequest)
    if err:
        return err
    svc = service()
    try:
        target = svc.target(database=body.database, schema=body.schema_text)
    except TargetError as exc:
        status = 404 if body.database and "unknown" in str(exc) else 422
        return _error(status, str(exc))
    try:
        answer = svc.answer(body.question, target, origin="api", row_cap=1)
    except ModelUnavailable as exc:
        return _error(503, f"no model can answer: {exc}")
    except ValueError as exc:
        return _error(422, str(exc))
    res = answer.result
    return jsonify(TranslateResponse(
        id=answer.id, sql=answer.sql, latency_ms=round(answer.latency_ms, 3), model=answer.model, cached=answer.cached,
        database=answer.database, executes=bool(res and res.ok), error=res.error if res else None,
        dialect=svc.dialect(target),
    ).model_dump())


@bp.route("/query", methods=("POST",))
def query():
    body, err = _body(QueryRequest)
    if err:
        return err
    svc = service()
    try:
        target = svc.target(database=body.database)
    except TargetError as exc:
        return _error(404, str(exc))
    res = svc.run_sql(target, body.sql)
    if not res.ok:
        return _error(400, res.error or "the query failed", error_kind=res.error_kind)
    rows = [[cell(v) for v in r] for r in res.rows]
    if body.format == "csv":
        return Response(result_csv(res.columns, rows), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{target.label}.csv"'})
    if body.format == "svg":
        svg = chart_svg(res.columns, rows)
        if svg is None:
            return _error(422, "no chart fits this result: a chart needs two columns, a category or a date/time "
                               "and a number, and at least two rows")
        return Response(svg, mimetype="image/svg+xml")
    return jsonify(columns=res.columns, rows=rows, truncated=res.truncated, elapsed_ms=round(res.elapsed_ms, 3),
                   chart=chart_kind(res.columns, rows))


@bp.route("/databases")
def databases():
    return jsonify(databases=[{"name": d.name, "uploaded": d.uploaded, "engine": d.engine}
                              for d in service().catalog.list()])


@bp.route("/model")
def model():
    try:
        choice = service().translators.current()
    except ModelUnavailable as exc:
        return _error(503, str(exc))
    return jsonify(model=choice.label, model_dir=str(choice.model_dir))


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 description of this API, with schemas generated from the pydantic models."""
    ref = "#/components/schemas/{model}"
    components: dict[str, Any] = {}
    for m in (TranslateRequest, TranslateResponse, QueryRequest, QueryResponse, ErrorResponse):
        schema = m.model_json_schema(by_alias=True, ref_template=ref)
        components.update(schema.pop("$defs", {}))
        components[m.__name__] = schema

    def body(name: str) -> dict:
        return {"required": True, "content": {"application/json": {"schema": {"$ref": ref.format(model=name)}}}}

    def resp(name: str, description: str) -> dict:
        schema = {"$ref": ref.format(model=name)}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    errors = {str(code): resp("ErrorResponse", text) for code, text in
              [(400, "Invalid JSON or a query that fails"), (404, "Unknown database"), (413, "Body too large"),
               (415, "Not JSON"), (422, "Invalid fields")]}
    return {
        "openapi": "3.0.3",
        "info": {"title": "t2sql API", "version": "1.0.0",
                 "description": "Translate questions into SQL with the champion model and run SQL read-only."},
        "paths": {
            "/api/translate": {"post": {
                "summary": "Translate a question into SQL", "operationId": "translate",
                "requestBody": body("TranslateRequest"),
                "responses": {"200": resp("TranslateResponse", "The SQL"), **errors,
                              "503": resp("ErrorResponse", "No model registered")}}},
            "/api/query": {"post": {
                "summary": "Run SQL read-only on a registered database", "operationId": "query",
                "requestBody": body("QueryRequest"),
                "responses": {"200": {"description": "The rows (at most the row cap); with format csv a CSV file, "
                                                     "with format svg the chart",
                                      "content": {"application/json": {"schema": {"$ref": ref.format(
                                          model="QueryResponse")}},
                                                  "text/csv": {"schema": {"type": "string"}},
                                                  "image/svg+xml": {"schema": {"type": "string"}}}},
                              **errors}}},
            "/api/databases": {"get": {
                "summary": "Registered databases", "operationId": "databases",
                "responses": {"200": {"description": "Names", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"databases": {"type": "array", "items": {
                        "type": "object", "properties": {"name": {"type": "string"},
                                                         "uploaded": {"type": "boolean"}}}}}}}}}}}},
            "/api/model": {"get": {
                "summary": "The model answering now", "operationId": "model",
                "responses": {"200": {"description": "Run id", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"model": {"type": "string"}, "model_dir": {"type": "string"}}}}}},
                              "503": resp("ErrorResponse", "No model registered")}}},
        },
        "components": {"schemas": _openapi30(components)},
    }


def _openapi30(node: Any) -> Any:
    """Rewrite JSON Schema ``anyOf [X, null]`` (pydantic's optional) as OpenAPI 3.0 ``nullable``;
    drop ``default: null`` of fields that may only be left out."""
    if isinstance(node, dict):
        if node.get("default", 0) is None and not any(k in node for k in ("anyOf", "nullable")):
            node = {k: v for k, v in node.items() if k != "default"}
        if "anyOf" in node:
            options = node["anyOf"]
            non_null = [o for o in options if o.get("type") != "null"]
            if len(non_null) == 1 and len(options) == 2:
                merged = {k: v for k, v in node.items() if k != "anyOf"}
                merged.update(_openapi30(non_null[0]))
                merged["nullable"] = True
                return merged
        return {k: _openapi30(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_openapi30(v) for v in node]
    return node


@bp.route("/openapi.json")
def openapi():
    doc = openapi_document()
    doc["servers"] = [{"url": request.host_url.rstrip("/")}]
    return jsonify(doc)


__all__ = ["bp", "openapi_document"]
