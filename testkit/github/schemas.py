"""The shared GitHub schemas (../shared/github): REST response validators and the GraphQL schema."""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graphql import GraphQLSchema

Json = Any

_LOAD_LOCK = threading.Lock()
_GRAPHQL_SCHEMA: GraphQLSchema | None = None
_REST_VALIDATORS: RestValidators | None = None


def shared_dir() -> Path:
    """The project's read-only ../shared directory (env RECONCILER_SHARED_DIR overrides)."""
    env = os.environ.get("RECONCILER_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".." / "shared"


class RestValidators:
    """Precompiled OpenAPI 3.0 response validators, one per (operationId, status)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        from jsonschema.validators import extend  # type: ignore[import-untyped,unused-ignore]
        from openapi_schema_validator import OAS30Validator, oas30_format_checker
        from referencing import Registry
        from referencing.jsonschema import DRAFT4

        strict_enum = OAS30Validator.VALIDATORS["enum"]

        def nullable_enum(validator: Any, enums: Any, instance: Any, schema: Any) -> Any:
            # OAS 3.0.3: `nullable: true` adds null to the allowed values; GitHub's spec relies on
            # that for e.g. check-run.conclusion (null while in progress, enum without null).
            if instance is None and schema.get("nullable") is True:
                return iter(())
            return strict_enum(validator, enums, instance, schema)

        def one_of(validator: Any, alternatives: Any, instance: Any, schema: Any) -> Any:
            # Two quirks of GitHub's description, checked here rather than patched in the data:
            # GET contents maps a directory (a JSON array) through a discriminator on the
            # property "type", which an array has not; and the Contents API's 409 is oneOf
            # basic-error and repository-rule-violation-error, which every error body satisfies
            # both of. So: an array skips the discriminator, and a body matching several
            # alternatives that are all error schemas passes, as GitHub's own answers do.
            from jsonschema.exceptions import (  # type: ignore[import-untyped,unused-ignore]
                ValidationError,
            )

            matched = [a for a in alternatives if validator.evolve(schema=a).is_valid(instance)]
            if len(matched) == 1:
                return
            if matched and all(str(a.get("$ref", "")).endswith("-error") for a in matched):
                return
            if len(matched) > 1:
                yield ValidationError(f"{instance!r:.200} is valid under {len(matched)} of oneOf")
                return
            context = [
                e for a in alternatives for e in validator.evolve(schema=a).iter_errors(instance)
            ]
            yield ValidationError(
                f"{instance!r:.200} is not valid under any of the given schemas", context=context
            )

        validator_class = extend(OAS30Validator, {"enum": nullable_enum, "oneOf": one_of})

        if not str(document.get("openapi", "")).startswith("3.0"):
            raise RuntimeError("expected an OpenAPI 3.0 document")
        uri = "urn:github-rest-openapi-subset"
        registry: Registry[Any] = Registry().with_resource(uri, DRAFT4.create_resource(document))

        def compile_pointer(pointer: str) -> Any:
            ref = f"{uri}#{urllib.parse.quote(pointer)}"
            return validator_class(
                {"$ref": ref}, registry=registry, format_checker=oas30_format_checker
            )

        self.operations: dict[tuple[str, str], str] = {}
        self.by_operation: dict[tuple[str, int], Any] = {}
        for path, item in document["paths"].items():
            escaped = path.replace("~", "~0").replace("/", "~1")
            for method, operation in item.items():
                self.operations[method.upper(), path] = operation["operationId"]
                for status, response in operation.get("responses", {}).items():
                    if "$ref" in response:
                        name = response["$ref"].rsplit("/", 1)[-1]
                        content = document["components"]["responses"][name].get("content", {})
                        base = f"/components/responses/{name}"
                    else:
                        content = response.get("content", {})
                        base = f"/paths/{escaped}/{method}/responses/{status}"
                    if "application/json" in content:
                        pointer = f"{base}/content/application~1json/schema"
                        self.by_operation[operation["operationId"], int(status)] = compile_pointer(
                            pointer
                        )
        self.basic_error = compile_pointer("/components/schemas/basic-error")
        self.requests: dict[str, Any] = {}  # operationId -> request body validator
        for path, item in document["paths"].items():
            escaped = path.replace("~", "~0").replace("/", "~1")
            for method, operation in item.items():
                content = operation.get("requestBody", {}).get("content", {})
                if "application/json" in content:
                    pointer = (
                        f"/paths/{escaped}/{method}/requestBody/content/application~1json/schema"
                    )
                    self.requests[operation["operationId"]] = compile_pointer(pointer)

    def request_errors(self, operation_id: str, body: Json) -> list[str]:
        """Violations of the operation's request body schema (what real GitHub answers 422 to)."""
        validator = self.requests.get(operation_id)
        if validator is None:
            return [f"{operation_id} takes no JSON request body"]
        return [
            f"{operation_id} request at /{'/'.join(str(p) for p in err.absolute_path)}: "
            f"{err.message[:300]}"
            for err in validator.iter_errors(body)
        ]

    def errors(self, operation_id: str | None, status: int, body: Json) -> list[str]:
        validator = self.by_operation.get((operation_id or "", status))
        if validator is None:
            if status < 300:
                return [f"no JSON response schema for {operation_id} {status}"]
            validator = self.basic_error
        return [
            f"{operation_id} {status} at /{'/'.join(str(p) for p in err.absolute_path)}: "
            f"{err.message[:300]}"
            for err in validator.iter_errors(body)
        ]


def rest_validators() -> RestValidators:
    """The validators of ../shared/github/rest-openapi-subset.json (compiled once per process)."""
    global _REST_VALIDATORS  # noqa: PLW0603
    if _REST_VALIDATORS is None:
        with _LOAD_LOCK:
            if _REST_VALIDATORS is None:
                path = shared_dir() / "github" / "rest-openapi-subset.json"
                with path.open(encoding="utf-8") as f:
                    _REST_VALIDATORS = RestValidators(json.load(f))
    return _REST_VALIDATORS


def load_graphql_schema() -> GraphQLSchema:
    """GitHub's public GraphQL schema from ../shared (parsed once per process)."""
    global _GRAPHQL_SCHEMA  # noqa: PLW0603
    if _GRAPHQL_SCHEMA is None:
        with _LOAD_LOCK:
            if _GRAPHQL_SCHEMA is None:
                from graphql import build_client_schema

                path = shared_dir() / "github" / "graphql-schema.json"
                with path.open(encoding="utf-8") as f:
                    raw = json.load(f)
                schema = build_client_schema(raw.get("data", raw))
                # GitHub's schema trips graphql-core's strict self-check; queries still validate.
                schema._validation_errors = []
                _GRAPHQL_SCHEMA = schema
    return _GRAPHQL_SCHEMA


def rest_schema_errors(operation_id: str | None, status: int, body: Json) -> list[str]:
    """Violations of the operation's response schema (basic-error for unlisted error statuses)."""
    return rest_validators().errors(operation_id, status, body)


def openapi_operation(method: str, template: str) -> str | None:
    """The operationId the OpenAPI subset gives `method template`, or None if it has none."""
    return rest_validators().operations.get((method.upper(), template))


def preload(graphql: bool = True, rest: bool = True) -> None:
    """Load the shared schemas now (else they load on first use, ~0.5 s for GraphQL)."""
    if rest:
        rest_validators()
    if graphql:
        load_graphql_schema()
