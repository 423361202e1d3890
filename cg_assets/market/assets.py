"""The seven market assets, materialized by one multi-asset step.

One step rather than seven: every series of every selected asset shares the process's rate
limiter and thread pool, so a backfill keeps the API's rate busy from the first request to the
last, and a date range is fetched as ceil(bars / 1000) requests per series in a single run
(single-run backfill policy). Each asset still has its own key, lineage, metadata and checks,
and can be materialized alone (the step is subsettable).
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from cg_assets.coinglass import CoinGlassClient
from cg_assets.market.checks import CHECKS, market_checks
from cg_assets.market.fetch import (
    SeriesRequest,
    fetch_by_asset,
    minimum_requests,
    plan_requests,
    rows_to_table,
)
from cg_assets.market.series import MARKET_ASSETS, MarketAsset
from cg_assets.partitions import (
    check_history_depth,
    closed_bars_end,
    daily_partitions,
    day_end_ms,
    days_between,
    to_ms,
)
from cg_assets.resources import COINGLASS_POOL, CoinGlassResource, LakeResource
from cg_assets.settings import Settings
from cg_assets.tables import column_schema

GROUP = "market"


def build_market_assets(settings: Settings) -> dg.AssetsDefinition:
    """The market multi-asset for the configured symbols, exchanges, interval and start date."""
    specs = [
        dg.AssetSpec(
            key=a.name,
            group_name=GROUP,
            description=a.description,
            kinds={"parquet", "duckdb"},
            metadata={
                "dagster/column_schema": column_schema(a.columns),
                "interval": settings.interval,
            },
        )
        for a in MARKET_ASSETS
    ]
    check_specs = [
        dg.AssetCheckSpec(name, asset=a.name, description=text)
        for a in MARKET_ASSETS
        for name, text in CHECKS.items()
    ]

    @dg.multi_asset(
        name="market_data",
        specs=specs,
        check_specs=check_specs,
        can_subset=True,
        partitions_def=daily_partitions(settings.start_date),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=COINGLASS_POOL,
    )
    def market_data(
        context: dg.AssetExecutionContext, coinglass: CoinGlassResource, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        window = context.partition_time_window
        now = datetime.now(UTC)
        check_history_depth(settings.plan, settings.interval, window.start, now)
        start_ms = to_ms(window.start)
        end_ms = closed_bars_end(to_ms(window.end), to_ms(now), settings.interval_ms)
        days = days_between(window.start, window.end)
        selected = [a for a in MARKET_ASSETS if dg.AssetKey(a.name) in context.selected_asset_keys]
        client = coinglass.client

        def resolve(coin: str, exchange: str) -> str:
            return client.resolve_pair(coin, exchange, overrides=settings.pair_overrides)

        requests = plan_requests(selected, settings.symbols, settings.exchanges, resolve)
        context.log.info(
            f"fetching {len(requests)} series for {', '.join(a.name for a in selected)}"
            f" over {days[0]}..{days[-1]} at {settings.interval}: at least"
            f" {minimum_requests(len(requests), start_ms, end_ms, settings.interval_ms)} requests"
        )

        def history(path: str, params: dict[str, str]) -> list[dict]:
            return client.history(path, params, settings.interval, start_ms, end_ms)

        closed = [d for d in days if day_end_ms(d) <= end_ms]
        for asset, fetched in fetch_by_asset(history, requests):
            table = rows_to_table(asset, fetched).sort_by([(k, "ascending") for k in asset.key])
            published = lake.publish(asset.name, table, days)
            shared, own = published.by_partition()
            for day, metadata in own.items():
                context.add_asset_metadata(
                    metadata, asset_key=asset.name, partition_key=day.isoformat()
                )
            yield dg.MaterializeResult(
                asset_key=asset.name,
                metadata={**shared, **_request_metadata(asset, fetched, client)},
            )
            expected = sorted({_series_id(asset, r) for r, _ in fetched})
            selected = {
                k.name
                for k in context.selected_asset_check_keys
                if k.asset_key == dg.AssetKey(asset.name)
            }
            yield from lake.check_results(
                asset.name,
                days,
                asset.schema,
                market_checks(asset, expected, closed, settings.interval_ms),
                selected,
            )

    return market_data


def _series_id(asset: MarketAsset, request: SeriesRequest) -> tuple[str, ...]:
    constants = request.constants
    return tuple(str(constants[c]) for c in asset.series_key)


def _request_metadata(
    asset: MarketAsset, fetched: list[tuple[SeriesRequest, list[dict]]], client: CoinGlassClient
) -> dict[str, Any]:
    endpoint_paths = {e.path for e in asset.endpoints}
    return {
        "series": len(fetched),
        "http_requests": sum(n for p, n in client.stats.by_path.items() if p in endpoint_paths),
    }
