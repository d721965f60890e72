"""The jwt-split issuer: the only holder of the private keys; it logs users in and signs tokens.

`create_app` (in `issuer.app`) builds the Flask app; gunicorn serves `issuer:create_app()`. It is
loaded when first asked for, not with the package: the command line (`python -m issuer`) needs
the stores, not Flask and every blueprint, and starts in half the time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from issuer.app import CANNOT_START, check_start, create_app

__all__ = ["CANNOT_START", "check_start", "create_app"]


def __getattr__(name: str) -> Any:
    """Load `issuer.app` for its public names, on first use."""
    if name in __all__:
        from issuer import app

        return getattr(app, name)
    raise AttributeError(f"module 'issuer' has no attribute {name!r}")
