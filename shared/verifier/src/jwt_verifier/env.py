"""Settings from environment variables: each declared once, on its dataclass field, read with a prefix.

    @dataclass(frozen=True)
    class Settings:
        timeout: float = setting("TIMEOUT", 5.0, parse=number(minimum=0.1), doc="seconds per call")
        secret: str = setting("SECRET", "", secret=True, doc="the client secret")

    read(Settings, os.environ, "ORDERS_")       # ORDERS_TIMEOUT, ORDERS_SECRET
    variables(Settings, "ORDERS_")              # for the documentation: name, default, doc

Unset and empty mean the same: the default. A value that does not parse raises `ConfigError`
naming the variable and what it must be; a secret's value is never put in a message, nor in
the dataclass's `repr`. No framework, no dependency: the library's own `VerifierConfig` is
read this way (`VerifierConfig.from_env`), and so are the services' settings.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from jwt_verifier.errors import ConfigError

__all__ = [
    "ConfigError",
    "Invalid",
    "Variable",
    "boolean",
    "choice",
    "integer",
    "lookup",
    "number",
    "read",
    "read_one",
    "setting",
    "some_of",
    "text",
    "upper",
    "url",
    "urls",
    "variables",
    "words",
    "writable_file",
]

T = TypeVar("T")
Environ = Mapping[str, str]
Derive = Callable[[Mapping[str, Any]], Any]

KEY = "jwt_verifier.env"


class Invalid(ConfigError):
    """Raised by a parser: what the value `must` be, and the offending value (shown unless a secret's)."""

    def __init__(self, must: str, got: object) -> None:
        super().__init__(must)
        self.must = must
        self.got = got


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Setting:
    """How one field is read: its variable's name (after the prefix), parser, documentation."""

    name: str
    parse: Callable[[str], Any]
    doc: str
    secret: bool
    derive: Derive | None
    shown: str | None
    file: bool


@dataclass(frozen=True)
class Variable:
    """One environment variable as the documentation lists it."""

    name: str
    default: str
    doc: str
    secret: bool


def text(raw: str) -> str:
    """Return the value as it is (stripped)."""
    return raw


def upper(raw: str) -> str:
    """Return the value in capitals (a log level)."""
    return raw.upper()


def words(raw: str) -> tuple[str, ...]:
    """Return the whitespace-separated words of the value."""
    return tuple(raw.split())


def boolean(raw: str) -> bool:
    """Return a boolean written 1/0, true/false, yes/no or on/off."""
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise Invalid("must be true or false", lowered)


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """Return a parser of whole numbers within the bounds."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise Invalid("must be a whole number", raw) from None
        _bounded(value, minimum, maximum)
        return value

    return parse


def number(minimum: float = 0.0, maximum: float | None = None) -> Callable[[str], float]:
    """Return a parser of numbers (seconds, usually) within the bounds; NaN is refused."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise Invalid("must be a number", raw) from None
        if math.isnan(value):
            raise Invalid(f"must be at least {minimum}", value)
        _bounded(value, minimum, maximum)
        return value

    return parse


def _bounded(value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise Invalid(f"must be at least {minimum}", value)
    if maximum is not None and value > maximum:
        raise Invalid(f"must be at most {maximum}", value)


def url(raw: str) -> str:
    """Return an absolute http(s) URL without query or fragment, and without a trailing slash."""
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise Invalid("must be an absolute http(s) URL", raw)
    if parts.query or parts.fragment:
        raise Invalid("must not have a query or fragment", raw)
    return raw.rstrip("/")


def urls(raw: str) -> tuple[str, ...]:
    """Return whitespace-separated absolute http(s) URLs (see `url`)."""
    return tuple(url(word) for word in raw.split())


def choice(*options: str) -> Callable[[str], str]:
    """Return a parser of one of `options`, compared in lower case."""

    def parse(raw: str) -> str:
        lowered = raw.lower()
        if lowered not in options:
            raise Invalid("must be " + " or ".join(repr(option) for option in options), lowered)
        return lowered

    return parse


def writable_file(raw: str) -> str:
    """Return the path of a file this process can write, or create in an existing directory (`:memory:` as it is).

    Checked, never created: a store's file is made on first use, by the process that uses it.
    """
    if raw == ":memory:":
        return raw
    path = Path(raw)
    if path.is_dir() or not (
        os.access(path, os.W_OK)
        if path.exists()
        else path.parent.is_dir() and os.access(path.parent, os.W_OK | os.X_OK)
    ):
        raise Invalid("must be a file this service can write, in an existing directory", raw)
    return raw


def some_of(*options: str) -> Callable[[str], tuple[str, ...]]:
    """Return a parser of whitespace-separated words, each one of `options` (compared as written)."""

    def parse(raw: str) -> tuple[str, ...]:
        chosen = tuple(raw.split())
        if not chosen or any(word not in options for word in chosen):
            raise Invalid("must be some of " + " ".join(options) + " (separated by spaces)", raw)
        return chosen

    return parse


def setting(
    name: str,
    default: Any = REQUIRED,
    *,
    parse: Callable[[str], Any] = text,
    doc: str = "",
    secret: bool = False,
    derive: Derive | None = None,
    shown: str | None = None,
    file: bool = False,
) -> Any:
    """Declare a dataclass field read from the variable `prefix + name`.

    `default` applies when the variable is unset or empty (none: required, unless `derive`
    computes it from the fields read before); `shown` is the default as the documentation
    writes it when it is derived (`{prefix}` in it becomes the prefix). A `secret` is left out of the `repr` and of every message.
    With `file`, the value may instead be in the file that `name` + `_FILE` names (a container
    or secret-store mount); setting both is an error.
    """
    declared = Setting(name, parse, doc, secret, derive, shown, file)
    metadata = {KEY: declared}
    if default is REQUIRED:
        return dataclasses.field(repr=not secret, metadata=metadata)
    if isinstance(default, list | dict | set):
        raise TypeError("a setting's default must be immutable (a tuple, a frozenset)")
    return dataclasses.field(default=default, repr=not secret, metadata=metadata)


def _declared(cls: type) -> list[tuple[dataclasses.Field[Any], Setting]]:
    return [(f, f.metadata[KEY]) for f in dataclasses.fields(cls) if KEY in f.metadata]


def read_one(
    cls: type,
    field: str,
    environ: Environ,
    prefix: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Any:
    """Return the value of one declared field of `cls` from the environment (see `read`)."""
    for f, declared in _declared(cls):
        if f.name == field:
            return _value(f, declared, environ, prefix, defaults or {}, dict(context or {}))
    raise KeyError(f"{cls.__name__} declares no setting {field!r}")


def read(
    cls: type[T],
    environ: Environ,
    prefix: str = "",
    *,
    defaults: Mapping[str, Any] | None = None,
    given: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> T:
    """Build the frozen dataclass `cls` from the environment, reading each declared field with `prefix`.

    `defaults` replaces fields' declared defaults (a service's own issuer, say); `given` sets
    fields without reading them; `context` holds values that `derive` functions may read beside
    the fields read before. A bad value raises `ConfigError` naming the variable.
    """
    defaults = defaults or {}
    values: dict[str, Any] = dict(given or {})
    seen: dict[str, Any] = {**(context or {}), **values}
    for f, declared in _declared(cls):
        if f.name in values:
            continue
        values[f.name] = seen[f.name] = _value(f, declared, environ, prefix, defaults, seen)
    return cls(**values)


def _value(
    f: dataclasses.Field[Any],
    declared: Setting,
    environ: Environ,
    prefix: str,
    defaults: Mapping[str, Any],
    seen: Mapping[str, Any],
) -> Any:
    variable = prefix + declared.name
    raw = environ.get(variable, "").strip()
    if declared.file:
        raw = _from_file(variable, raw, environ.get(f"{variable}_FILE", "").strip())
    if raw:
        return _parsed(variable, raw, declared.parse, declared.secret)
    if f.name in defaults:
        return defaults[f.name]
    if declared.derive is not None:
        return declared.derive(seen)
    if f.default is not dataclasses.MISSING:
        return f.default
    raise ConfigError(f"{variable} is required but not set")


def _parsed(variable: str, raw: str, parse: Callable[[str], T], secret: bool) -> T:
    try:
        return parse(raw)
    except Invalid as exc:
        # Raised outside the handler: a secret's value stays out of the error's context too.
        must, got = exc.must, exc.got
    except ValueError:  # a parser of the standard library's: no message of ours to give
        must, got = "must be a valid value", raw
    raise ConfigError(f"{variable} {must}" if secret else f"{variable} {must}, got {got!r}")


def lookup(environ: Environ, variable: str, parse: Callable[[str], T], default: T | None = None) -> T:
    """Return one variable outside a settings object, parsed; unset or empty: `default`, required if None."""
    raw = environ.get(variable, "").strip()
    if raw:
        return _parsed(variable, raw, parse, secret=False)
    if default is None:
        raise ConfigError(f"{variable} is required but not set")
    return default


def _from_file(variable: str, raw: str, path: str) -> str:
    """Return the value, or the stripped content of the file `<variable>_FILE` names (not both)."""
    if raw and path:
        raise ConfigError(f"set {variable} or {variable}_FILE, not both")
    if not path:
        return raw
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = type(exc).__name__
    raise ConfigError(f"{variable}_FILE names {path}, which cannot be read: {reason}")


def variables(
    cls: type,
    prefix: str = "",
    *,
    defaults: Mapping[str, Any] | None = None,
    shown: Mapping[str, str] | None = None,
) -> list[Variable]:
    """List the variables `cls` reads with `prefix`, each with its default as the documentation writes it."""
    defaults, shown = defaults or {}, shown or {}
    listed = []
    for f, declared in _declared(cls):
        if f.name in shown:
            default = shown[f.name]
        elif f.name in defaults:
            default = _shown(defaults[f.name])
        elif declared.shown is not None:
            default = declared.shown.replace("{prefix}", prefix)  # `${prefix}ISSUER`: the prefixed variable
        elif f.default is not dataclasses.MISSING and not declared.secret:
            default = _shown(f.default)
        else:
            default = ""
        listed.append(Variable(prefix + declared.name, default, declared.doc, declared.secret))
        if declared.file:
            listed.append(Variable(f"{prefix}{declared.name}_FILE", "", f"a file holding {declared.doc}", False))
    return listed


def _shown(value: object) -> str:
    """Write a default as a variable would hold it: `true`, `2.0`, `profile admin`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list | frozenset):
        return " ".join(str(item) for item in value)
    return str(value)
