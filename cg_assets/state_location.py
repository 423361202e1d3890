"""Where the state shared by every run lives: the CoinGlass rate schedule and the alert ledger.

On one machine each is a SQLite file under CG_DATA_DIR. A deployment whose runs start on any
node sets `CG_STATE_DSN` to a PostgreSQL URL, and both live there. The URL carries a password,
so like the other secrets it reaches resources only as an `EnvVar` and is never printed:
`dsn_ident` names the database without it.

It is not discovered from the Dagster instance's storage: a resource that copied the
instance's URL into its config would show the password in the UI, and one that read it at run
time from its context's instance would depend on every caller (sensors included) having one,
or the same alert could be decided in two ledgers. The deployment sets `CG_STATE_DSN` beside
the instance's own variables (it may name the same database: the tables do not collide); a run
on a PostgreSQL instance without it says so in its log (`cg_assets.resources.state`).

It sits on the bottom floor, importing nothing, because `settings` validates the variable and
the clients on the floor above open the stores.
"""

from __future__ import annotations

from urllib.parse import urlsplit

STATE_DSN_SETTING = "CG_STATE_DSN"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_dsn(location: str) -> bool:
    """Whether a state location names a PostgreSQL database (else it is a SQLite file path)."""
    return location.startswith(POSTGRES_SCHEMES)


def dsn_ident(dsn: str) -> str:
    """The database a DSN names, for logs and metadata: never its user, password or options."""
    url = urlsplit(dsn)
    return f"postgresql:{url.hostname or ''}:{url.port or 5432}{url.path}"
