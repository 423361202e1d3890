"""Every step that calls CoinGlass is in the `coinglass` pool, and nothing else is: the pool's
limit in the production dagster.yaml then caps exactly the API-calling steps in flight."""

import dagster as dg

from cg_assets.definitions import build_defs
from cg_assets.resources import COINGLASS_POOL
from cg_assets.settings import Settings


def assets_by_resource(settings: Settings) -> tuple[set[str], set[str], dict[str, str | None]]:
    """(ops needing the CoinGlass resource, the other ops, each op's pool)."""
    defs = build_defs(settings)
    graph = defs.resolve_asset_graph()
    calling, other, pools = set(), set(), {}
    for assets_def in graph.assets_defs:
        if not assets_def.is_executable:
            continue
        name = assets_def.op.name
        pools[name] = assets_def.op.pool
        (calling if "coinglass" in assets_def.required_resource_keys else other).add(name)
    return calling, other, pools


def test_every_coinglass_caller_is_in_the_pool(settings: Settings):
    calling, other, pools = assets_by_resource(settings)
    # The API-calling assets this product has; a new one must join the pool too.
    assert {
        "market_data",
        "liquidation_orders",
        "market_snapshot",
        "coinglass_liquidation_heatmap",
        "liquidation_alerts",
    } <= calling
    assert {name: pools[name] for name in calling} == dict.fromkeys(calling, COINGLASS_POOL)
    assert other, "some assets read only the lake"
    assert {name: pools[name] for name in other} == dict.fromkeys(other)


def test_pool_shows_on_the_asset_nodes(settings: Settings):
    """The UI's asset details name the pool (the run's steps claim slots by it)."""
    defs = build_defs(settings)
    node = defs.resolve_asset_graph().get(dg.AssetKey("funding_rate_ohlc"))
    assert node.pools == {COINGLASS_POOL}
