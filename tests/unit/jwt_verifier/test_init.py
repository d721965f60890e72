"""Unit tests for the jwt_verifier package: a framework-free core with one exception root."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import jwt_verifier
from jwt_verifier.errors import JwtVerifierError

FRAMEWORKS = ("flask", "werkzeug", "fastapi", "starlette")
CORE = [
    "jwt_verifier",
    "jwt_verifier.cache_control",
    "jwt_verifier.config",
    "jwt_verifier.deadline",
    "jwt_verifier.dpop",
    "jwt_verifier.dpop_scheme",
    "jwt_verifier.env",
    "jwt_verifier.errors",
    "jwt_verifier.jose",
    "jwt_verifier.jwks",
    "jwt_verifier.observe",
    "jwt_verifier.protection",
    "jwt_verifier.protector",
    "jwt_verifier.replay",
    "jwt_verifier.rfc6750",
    "jwt_verifier.rfc9728",
    "jwt_verifier.status",
    "jwt_verifier.statuslist",
    "jwt_verifier.verifier",
]


def test_the_core_imports_no_web_framework() -> None:
    code = (
        f"import sys\nimport {', '.join(CORE)}\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_exception_of_the_library_has_one_root() -> None:
    found = []
    for module_info in pkgutil.iter_modules(jwt_verifier.__path__):
        if module_info.name in {"flask", "fastapi"}:
            continue  # the integrations raise the core's errors; they define none
        module = importlib.import_module(f"jwt_verifier.{module_info.name}")
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__.startswith("jwt_verifier"):
                found.append(value)
    assert found
    assert [cls for cls in found if not issubclass(cls, JwtVerifierError)] == []


def test_the_public_api_is_listed_in_all() -> None:
    for name in jwt_verifier.__all__:
        assert hasattr(jwt_verifier, name), name
    assert "JwtVerifierError" in jwt_verifier.__all__
    assert "Reason" in jwt_verifier.__all__
