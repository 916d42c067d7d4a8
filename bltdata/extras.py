"""Optional dependencies, grouped as the package's extras (pyproject.toml), and the one error
that names the extra to install when a command needs one that is missing.

A training node installs only the base dependencies (`pip install bltdata[train]`): torch,
numpy, pyarrow, zstandard, click, safetensors and tqdm load existing shards and train,
evaluate and checkpoint a BLT. The Beam pipeline, the numba patching kernels and the
inspection plots and statistics are extras. `bltdata.cli.main` turns a `MissingExtra` (or an
ImportError of a module listed here) into one line: what to `pip install`.
"""
from __future__ import annotations

import importlib

# extra → the modules it provides (import names), as declared in pyproject.toml
EXTRAS = {
    "patching": ("numba",),
    "pipeline": ("apache_beam", "numba"),
    "inspect": ("matplotlib", "polars"),
    "dask": ("dask", "distributed"),
}
# the extra named when one module is missing: the smallest extra that provides it
_EXTRA_OF = {module: extra for extra, modules in reversed(EXTRAS.items()) for module in modules}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says which extra provides it."""

    def __init__(self, extra: str, module: str):
        super().__init__(f"needs the {extra} extra ({module} is not installed): pip install 'bltdata[{extra}]'",
                         name=module)
        self.extra = extra


def require(extra: str, *modules: str) -> None:
    """Import each of `modules` (default: all of `extra`'s) or raise `MissingExtra` naming `extra`."""
    for module in modules or EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise MissingExtra(extra, module) from e


def missing_extra(error: ImportError) -> MissingExtra | None:
    """The `MissingExtra` an ImportError amounts to, or None when it is not about an extra's module."""
    if isinstance(error, MissingExtra):
        return error
    top = (error.name or "").split(".")[0]
    return MissingExtra(_EXTRA_OF[top], top) if top in _EXTRA_OF else None
