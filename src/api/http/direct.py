"""The routes' own functions, called without FastAPI's per-request machinery.

FastAPI routes, validates and documents every route. For a request that is in
order, most of what it does per request (a walk of every route, solving each
dependency, building the body's value through several layers) costs more than
the ledger's own work for a spend. So the edge calls a route's endpoint
itself when the request is in order, and leaves every other request to
FastAPI:

- at start-up, each `async` endpoint that returns a Response, and whose
  parameters are all of the kinds below, is read from its signature: path and
  query parameters (validated by pydantic with the same annotation FastAPI
  uses), a JSON body (one model, optional or not), dependencies that take
  only the request, and the request itself;
- per request, the route is found as FastAPI finds it (the first route of
  the app's routers, in the order the app includes them, whose path and
  method match; the app's own routes, its documents, are at paths no router
  uses); its values are validated
  in the same Python mode as FastAPI's; its dependencies are called; then the
  endpoint. An exception it raises is answered by the app's own handlers
  (api.http.problems.answer).

Whatever is not plainly in order (a value that does not validate, a body
that is not a JSON object, a repeated or unknown query parameter, a
dependency that refuses) goes to FastAPI untouched, which answers it as it
always has: only requests with nothing to complain about take this path, and
they get the answer FastAPI would give. Nothing here has side effects before
the endpoint runs.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, params
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from api.http import problems

_MISSING = inspect.Parameter.empty


class _Refused(Exception):
    """Something about the request FastAPI should answer itself."""


@dataclass(frozen=True, slots=True)
class _Value:
    """A path or query parameter: its name, its validator, its default."""

    name: str
    adapter: TypeAdapter[Any]
    default: Any = _MISSING


@dataclass(frozen=True, slots=True)
class _Body:
    name: str
    adapter: TypeAdapter[Any]
    required: bool


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route's endpoint, and how to call it from a request."""

    route: APIRoute
    call: Callable[..., Awaitable[Response]]
    path: tuple[_Value, ...]
    query: dict[str, _Value]
    body: _Body | None
    dependencies: tuple[tuple[str, Callable[[Request], Awaitable[Any]]], ...]
    request: str | None

    @classmethod
    def of(cls, route: APIRoute) -> Endpoint | None:
        """The endpoint of a route whose parameters are all of kinds this
        module calls, else None (FastAPI alone serves it)."""
        call = route.endpoint
        if route.dependencies or not inspect.iscoroutinefunction(call):
            return None
        hints = typing.get_type_hints(call, include_extras=True)
        if hints.get("return") is not Response:
            return None
        path: list[_Value] = []
        query: dict[str, _Value] = {}
        body: _Body | None = None
        dependencies: list[tuple[str, Callable[[Request], Awaitable[Any]]]] = []
        request: str | None = None
        for name, parameter in inspect.signature(call).parameters.items():
            annotation = hints[name]
            marker = _marker(annotation)
            if annotation is Request:
                request = name
            elif isinstance(marker, params.Depends):
                dependency = marker.dependency
                if dependency is None or not _takes_only_request(dependency):
                    return None
                dependencies.append((name, dependency))
            elif isinstance(marker, params.Path):
                path.append(_Value(name, TypeAdapter(annotation)))
            elif isinstance(marker, params.Query):
                query[name] = _Value(name, TypeAdapter(annotation), parameter.default)
            elif marker is None and body is None and _is_model(annotation):
                required = parameter.default is _MISSING
                body = _Body(name, TypeAdapter(annotation), required)
            else:
                return None
        if {v.name for v in path} != set(route.param_convertors):
            return None
        return cls(route, call, tuple(path), query, body, tuple(dependencies), request)

    def arguments(self, scope: Scope, matched: dict[str, str], body: bytes) -> dict[str, Any]:
        """The endpoint's arguments but its dependencies', validated; raises
        _Refused for anything FastAPI should answer."""
        arguments: dict[str, Any] = {}
        convertors = self.route.param_convertors
        try:
            for value in self.path:
                raw = convertors[value.name].convert(matched[value.name])
                arguments[value.name] = value.adapter.validate_python(raw)
            given = _query(scope)
            for name in given:
                if name not in self.query:
                    raise _Refused
            for name, value in self.query.items():
                if name in given:
                    arguments[name] = value.adapter.validate_python(given[name])
                elif value.default is _MISSING:
                    raise _Refused
                else:
                    arguments[name] = value.default
            if self.body is not None:
                arguments[self.body.name] = self._body(body)
        except ValidationError:
            raise _Refused from None
        return arguments

    def _body(self, body: bytes) -> Any:
        assert self.body is not None
        if not body:
            if self.body.required:
                raise _Refused
            return None
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Refused from None
        if not isinstance(value, dict):
            raise _Refused
        return self.body.adapter.validate_python(value)


def _marker(annotation: Any) -> Any:
    """The FastAPI parameter (Path, Query, Depends...) an Annotated names."""
    if typing.get_origin(annotation) is typing.Annotated:
        for extra in annotation.__metadata__:
            if isinstance(extra, params.Depends | params.Param | params.Body):
                return extra
    return None


def _is_model(annotation: Any) -> bool:
    """A pydantic model, or an optional one."""
    members = typing.get_args(annotation) if typing.get_origin(annotation) else (annotation,)
    models = [m for m in members if m is not type(None)]
    return len(models) == 1 and isinstance(models[0], type) and issubclass(models[0], BaseModel)


def _takes_only_request(dependency: Callable[..., Any]) -> bool:
    if not inspect.iscoroutinefunction(dependency):
        return False
    hints = typing.get_type_hints(dependency)
    names = list(inspect.signature(dependency).parameters)
    return len(names) == 1 and hints.get(names[0]) is Request


def _query(scope: Scope) -> dict[str, str]:
    """The query's parameters, as Starlette parses them; a repeated one is
    FastAPI's to judge."""
    raw: bytes = scope["query_string"]
    if not raw:
        return {}
    found: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name in found:
            raise _Refused
        found[name] = value
    return found


@dataclass(frozen=True, slots=True)
class _Candidate:
    regex: re.Pattern[str]
    endpoint: Endpoint | None  # None: a route FastAPI serves


class DirectRoutes:
    """Every route of some routers, in their order, by method; the ones with
    an Endpoint are called here."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self._by_method: dict[str, list[_Candidate]] = {}
        self.endpoints: list[Endpoint] = []
        self._opaque = False
        for route in routes:
            if not isinstance(route, Route) or route.methods is None:
                # A mount, a websocket, a route for every method: what it
                # matches is not read here, so nothing after it is called
                # directly.
                self._opaque = True
                continue
            endpoint = (
                Endpoint.of(route) if isinstance(route, APIRoute) and not self._opaque else None
            )
            if endpoint is not None:
                self.endpoints.append(endpoint)
            for method in route.methods:
                if method != "HEAD":
                    candidate = _Candidate(route.path_regex, endpoint)
                    self._by_method.setdefault(method, []).append(candidate)

    @classmethod
    def of(cls, routers: Sequence[APIRouter]) -> DirectRoutes:
        return cls([route for router in routers for route in router.routes])

    def find(self, scope: Scope) -> tuple[Endpoint, dict[str, str]] | None:
        """The route Starlette would pick for this request, if it is called
        here, with the path's raw values."""
        if scope.get("root_path"):
            return None
        path = scope["path"]
        for candidate in self._by_method.get(scope["method"], ()):
            match = candidate.regex.match(path)
            if match is not None:
                if candidate.endpoint is None:
                    return None
                return candidate.endpoint, match.groupdict()
        return None

    async def serve(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> bool:
        """Answers the request and says True, or says False having done
        nothing (FastAPI is to answer it)."""
        found = self.find(scope)
        if found is None:
            return False
        endpoint, matched = found
        try:
            arguments = endpoint.arguments(scope, matched, body)
        except _Refused:
            return False
        request = Request(scope, receive)
        try:
            for name, dependency in endpoint.dependencies:
                arguments[name] = await dependency(request)
        except HTTPException:
            return False
        if endpoint.request is not None:
            arguments[endpoint.request] = request
        try:
            response = await endpoint.call(**arguments)
        except Exception as e:
            response = await problems.answer(request, e)
        await response(scope, receive, send)
        return True
