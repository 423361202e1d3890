"""cg-pipeline's Dagster code location; `defs` is built on first access.

Loading `defs` reads and validates the environment and imports Dagster. The lazy attribute
keeps that cost and that validation away from the light parts of the package, above all the
simulator (`cg-sim`) and the client, which are imported without a Dagster context.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from cg_assets.definitions import defs

        return defs
    raise AttributeError(f"module 'cg_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["defs"]
