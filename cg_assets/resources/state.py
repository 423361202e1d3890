"""A deployment that left its shared state on each node's disk, said in the run's log.

The rate schedule and the alert ledger are shared between nodes only through CG_STATE_DSN
(`cg_assets.state_location` says why it is not read from the instance). A run whose Dagster
instance keeps its runs in PostgreSQL is part of such a deployment, so without the variable
each node would keep its own schedule (N nodes, N times the rate) and its own ledger (the same
alert sent from two nodes): such a run says so in its log rather than failing, since one
machine with a PostgreSQL instance is a valid setup too.
"""

from __future__ import annotations

import dagster as dg

from cg_assets.state_location import STATE_DSN_SETTING, is_postgres_dsn


def unshared_state_warning(
    instance: dg.DagsterInstance | None, location: str | None, what: str
) -> str:
    """Why `what`, kept at `location`, is not shared although the instance is ('' = fine)."""
    if instance is None or (location and is_postgres_dsn(location)):
        return ""
    if not type(instance.run_storage).__module__.startswith("dagster_postgres"):
        return ""
    return (
        f"The Dagster instance keeps its runs in PostgreSQL, but {what} is on this node's disk:"
        f" runs on other nodes do not share it. Set {STATE_DSN_SETTING} to a PostgreSQL URL"
        " (it may be the instance's database)."
    )
