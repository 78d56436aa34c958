"""Redis Lua scripts kept as ``.lua`` files in a package's ``lua/`` folder, read one way.

A script is read once, at import of the module that registers it; its text may be
the concatenation of several files (a shared prelude, then the script's own body).
"""

from __future__ import annotations

from importlib import resources

__all__ = ["read_lua"]


def read_lua(package: str, *names: str) -> str:
    """The files ``names`` of the ``lua/`` folder of ``package``, joined in that order."""
    folder = resources.files(package) / "lua"
    return "\n".join((folder / name).read_text(encoding="utf-8") for name in names)
