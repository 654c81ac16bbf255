"""A lean path for the hot GET routes: their parameters parsed by validators compiled once at start-up
instead of FastAPI's per-request dependency resolution (which, with its type introspection, cost more
CPU than a 1-row page's whole database read).

``FastPath`` is a pure ASGI middleware inside the metrics and access-control ones. For a GET request
whose path matches one of the given routers' routes it parses the query string, checks every value
against the rules the route's signature declares (``Query``/``Path`` constraints: pattern, length,
``ge``/``le``, ``Literal`` choices) and calls the route's own endpoint function with them. Whatever it
is not sure of it hands to the full FastAPI app unchanged: a value it does not accept (so every error
answer, 400 or 422-turned-400, is FastAPI's own, word for word), an unknown or repeated parameter, an
empty value, a number written other than as plain digits, a route whose signature uses something
it does not model. It only ever accepts a subset of what FastAPI accepts, and gives the endpoint the
same values FastAPI would. Errors the endpoint raises (``ApiError``: a bad cursor, a 404, a 409) get
the same answer as through FastAPI's handlers, and the matched route is put in the scope as FastAPI
does, so ``/metrics`` counts the request under the same route template. The OpenAPI schema and
``/docs`` are FastAPI's, from the same routes.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from annotated_types import Ge, Le, MaxLen, MinLen
from fastapi import params
from fastapi.routing import APIRoute, APIRouter
from pydantic.fields import FieldInfo

from api import deps
from api.errors import ApiError, error_response, reject_unknown_params

Convert = Callable[[str], Any]  # the value, or raises _Refused
_DIGITS = re.compile(r"[0-9]{1,19}")
_MISSING = object()
# dependencies answered from the app's state, as api/deps.py's functions answer them
_STATE_DEPS: dict[Callable[..., Any], Callable[[deps.ApiState], Any]] = {
    deps._state: lambda state: state,
    deps._pool: lambda state: state.pool,
    deps._settings: lambda state: state.settings,
    deps._metrics: lambda state: state.metrics,
}


def _query_pairs(text: str) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True)``; without an escape (``%``, ``+``) to decode, split
    in place (a fifth of parse_qsl's time: it unquotes every name and value)."""
    if "%" in text or "+" in text:
        return parse_qsl(text, keep_blank_values=True)
    return [(name, value) for name, _, value in (f.partition("=") for f in text.split("&") if f)]


class _Refused(Exception):
    """This request is FastAPI's to answer (its error, in its words)."""


class _Unsupported(Exception):
    """A route whose signature uses something this path does not model: FastAPI serves it."""


def _constraints(infos: list[FieldInfo]) -> tuple[str | None, list[Any], str | None]:
    """The alias (the last one given wins, as in FastAPI), the constraints of every ``Query``/``Path``
    of the annotation (all of them apply) and the kind of parameter."""
    alias, rules, kind = None, [], None
    for info in infos:
        if isinstance(info, params.Path):
            kind = "path"
        elif isinstance(info, params.Query):
            kind = kind or "query"
        else:
            raise _Unsupported(f"{type(info).__name__} parameter")
        alias = info.alias or alias
        rules.extend(info.metadata)
    return alias, rules, kind


def _bounds(rules: list[Any]) -> tuple[int | None, int | None, int, int | None, list[re.Pattern[str]]]:
    """ge, le, min and max length, patterns: every rule given applies (the strictest bound wins)."""
    low: int | None = None
    high: int | None = None
    min_len, max_len = 0, None
    patterns = []
    for rule in rules:
        if isinstance(rule, Ge) and type(rule.ge) is int:
            low = rule.ge if low is None else max(low, rule.ge)
        elif isinstance(rule, Le) and type(rule.le) is int:
            high = rule.le if high is None else min(high, rule.le)
        elif isinstance(rule, MinLen):
            min_len = max(min_len, rule.min_length)
        elif isinstance(rule, MaxLen):
            max_len = rule.max_length if max_len is None else min(max_len, rule.max_length)
        elif isinstance(getattr(rule, "pattern", None), str):
            patterns.append(re.compile(rule.pattern))
        else:
            raise _Unsupported(f"constraint {rule!r}")
    return low, high, min_len, max_len, patterns


def _converter(base: Any, rules: list[Any]) -> Convert:
    """A check of one value against its type and the rules; stricter than pydantic where they differ
    (numbers: plain digits only; patterns must match the whole value)."""
    low, high, min_len, max_len, patterns = _bounds(rules)
    if base is int:
        if min_len or max_len is not None or patterns:
            raise _Unsupported("a length or pattern on a number")

        def number(text: str) -> int:
            if not _DIGITS.fullmatch(text):
                raise _Refused
            value = int(text)
            if (low is not None and value < low) or (high is not None and value > high):
                raise _Refused
            return value

        return number
    if low is not None or high is not None:
        raise _Unsupported("a bound on a string")
    if base is str:

        def string(text: str) -> str:
            if len(text) < min_len or (max_len is not None and len(text) > max_len):
                raise _Refused
            if not all(p.fullmatch(text) for p in patterns):
                raise _Refused
            return text

        return string
    if typing.get_origin(base) is Literal and all(type(v) is str for v in typing.get_args(base)):
        if rules:
            raise _Unsupported("constraints on a Literal")
        choices = frozenset(typing.get_args(base))

        def choice(text: str) -> str:
            if text not in choices:
                raise _Refused
            return text

        return choice
    raise _Unsupported(f"type {base!r}")


class _Call:
    """A function (an endpoint or one of its dependencies) with its parameters compiled."""

    def __init__(self, function: Callable[..., Any], path_names: set[str]) -> None:
        self.function = function
        self.is_async = inspect.iscoroutinefunction(function)
        self.query: list[tuple[str, str, Convert, Any]] = []  # (argument, query name, convert, default)
        self.path: list[tuple[str, Convert]] = []
        self.state: list[tuple[str, Callable[[deps.ApiState], Any]]] = []
        self.subs: list[tuple[str, _Call]] = []
        hints = typing.get_type_hints(function, include_extras=True)
        for name, parameter in inspect.signature(function).parameters.items():
            self._add(name, hints.get(name), parameter.default, path_names)
        # per request only the parameters given are converted, over the defaults copied at once (a
        # list route declares ten or more, a request names one to three)
        self.defaults = {name: d for name, _, _, d in self.query if d is not _MISSING}
        self.required = tuple(query_name for _, query_name, _, d in self.query if d is _MISSING)
        self.by_name: dict[str, tuple[str, Convert]] = {}
        for name, query_name, convert, _ in self.query:
            if query_name in self.by_name:
                raise _Unsupported(f"two parameters named {query_name!r}")
            self.by_name[query_name] = (name, convert)

    def _add(self, name: str, hint: Any, default: Any, path_names: set[str]) -> None:
        extras: list[Any] = []
        if typing.get_origin(hint) is typing.Annotated:
            hint, *extras = typing.get_args(hint)
        depends = [e for e in extras if isinstance(e, params.Depends)]
        if depends:
            dependency = depends[-1].dependency
            if dependency in _STATE_DEPS:
                self.state.append((name, _STATE_DEPS[dependency]))
            elif dependency is not None:
                self.subs.append((name, _Call(dependency, path_names)))
            else:
                raise _Unsupported("Depends() without a function")
            return
        alias, rules, kind = _constraints([e for e in extras if isinstance(e, FieldInfo)])
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(
            None
        ) in typing.get_args(hint)
        if optional:
            rest = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(rest) != 1:
                raise _Unsupported(f"union {hint!r}")
            hint = rest[0]
        convert = _converter(hint, rules)
        if name in path_names or kind == "path":
            self.path.append((name, convert))
            return
        if default is inspect.Parameter.empty:
            default = None if optional else _MISSING
        self.query.append((name, alias or name, convert, default))

    def names(self) -> set[str]:
        found = {query_name for _, query_name, _, _ in self.query}
        for _, sub in self.subs:
            found |= sub.names()
        return found

    async def __call__(self, state: deps.ApiState, query: dict[str, str], path: dict[str, str]) -> Any:
        kwargs = self.defaults.copy()
        for query_name, text in query.items():
            entry = self.by_name.get(query_name)
            if entry is not None:
                kwargs[entry[0]] = entry[1](text)
        for query_name in self.required:
            if query_name not in query:
                raise _Refused
        for name, convert in self.path:
            kwargs[name] = convert(path[name])
        for name, get in self.state:
            kwargs[name] = get(state)
        for name, sub in self.subs:
            kwargs[name] = await sub(state, query, path)
        result = self.function(**kwargs)
        return await result if self.is_async else result


class _Route:
    def __init__(self, route: APIRoute, prefix: str) -> None:
        for dependency in route.dependencies:
            if dependency.dependency is not reject_unknown_params:  # that one: an unknown name is refused
                raise _Unsupported(f"route dependency {dependency.dependency!r}")
        self.route = route
        self.regex = re.compile("^" + re.escape(prefix) + route.path_regex.pattern.removeprefix("^"))
        self.call = _Call(route.endpoint, set(route.param_convertors))
        self.known = frozenset(self.call.names())


@dataclass
class FastPathStats:
    answered: int = 0  # requests answered here
    passed: int = 0  # requests of its routes handed to FastAPI (refused values, unknown parameters...)


class FastPath:
    """ASGI middleware: the hot GET routes of ``routers`` (mounted under ``prefix``) answered without
    FastAPI's per-request machinery, everything else passed on to ``app``."""

    def __init__(
        self,
        app: Any,
        routers: Iterable[APIRouter],
        prefix: str,
        state: Callable[[dict[str, Any]], deps.ApiState],
        stats: FastPathStats,
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.state = state
        self.stats = stats
        self.exact: dict[str, _Route] = {}  # paths without parameters that no earlier route claims
        self.templated: list[_Route] = []  # in declaration order: the first match wins, as in FastAPI
        for router in routers:
            for route in router.routes:
                if not isinstance(route, APIRoute) or route.methods != {"GET"}:
                    continue
                try:
                    compiled = _Route(route, prefix)
                except _Unsupported:
                    continue  # served by FastAPI as before
                path = prefix + route.path
                if route.param_convertors or any(t.regex.match(path) for t in self.templated):
                    self.templated.append(compiled)
                else:
                    self.exact.setdefault(path, compiled)

    def _match(self, path: str) -> tuple[_Route, dict[str, str]] | None:
        route = self.exact.get(path)
        if route is not None:
            return route, {}
        for route in self.templated:
            found = route.regex.match(path)
            if found is not None:
                return route, found.groupdict()
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        matched = self._match(scope["path"])
        if matched is None:
            await self.app(scope, receive, send)
            return
        route, path = matched
        pairs = _query_pairs(scope["query_string"].decode("latin-1"))
        query = dict(pairs)
        if len(query) != len(pairs) or not route.known.issuperset(query) or "" in query.values():
            await self._pass(scope, receive, send)
            return
        scope["route"] = route.route  # the metrics' route template, as FastAPI sets it
        try:
            response = await route.call(self.state(scope), query, path)
        except _Refused:
            await self._pass(scope, receive, send)
            return
        except ApiError as exc:
            response = error_response(exc)
        self.stats.answered += 1
        await response(scope, receive, send)

    async def _pass(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.stats.passed += 1
        await self.app(scope, receive, send)
