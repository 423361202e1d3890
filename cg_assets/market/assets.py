"""The seven market assets, materialized by one multi-asset step.

One step rather than seven: every series of every selected asset shares the process's rate
limiter and thread pool, so a backfill keeps the API's rate busy from the first request to the
last, and a date range is fetched as ceil(bars / 1000) requests per series in a single run
(single-run backfill policy). Each asset still has its own key, lineage, metadata and checks,
and can be materialized alone (the step is subsettable).
"""

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from cg_assets.coinglass import CoinGlassClient
from cg_assets.market.checks import CHECKS, run_checks
from cg_assets.market.fetch import (
    SeriesRequest,
    fetch_by_asset,
    minimum_requests,
    plan_requests,
    rows_to_table,
    split_days,
)
from cg_assets.market.series import MARKET_ASSETS, Column, MarketAsset
from cg_assets.partitions import (
    check_history_depth,
    closed_bars_end,
    daily_partitions,
    day_end_ms,
    days_between,
    to_ms,
)
from cg_assets.resources import CoinGlassResource, LakeResource
from cg_assets.settings import Settings

GROUP = "market"
PREVIEW_ROWS = 8


def column_schema(columns: Sequence[Column]) -> dg.TableSchema:
    """Column names, types and descriptions (with units) for the asset's page in the UI."""
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, str(c.type), description=c.description) for c in columns]
    )


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
        catalog = lake.catalog
        for asset, fetched in fetch_by_asset(history, requests):
            table = rows_to_table(asset, fetched).sort_by([(k, "ascending") for k in asset.key])
            paths = [
                str(lake.lake.write_day(asset.name, day, part))
                for day, part in split_days(table, days).items()
            ]
            views = catalog.ensure_views([asset.name])
            yield dg.MaterializeResult(
                asset_key=asset.name,
                metadata=_metadata(asset, table, fetched, days, paths, client, views.summary),
            )
            expected = sorted({_series_id(asset, r) for r, _ in fetched})
            for outcome in run_checks(asset, paths, expected, closed, settings.interval_ms):
                key = dg.AssetCheckKey(dg.AssetKey(asset.name), outcome.name)
                if key in context.selected_asset_check_keys:
                    yield dg.AssetCheckResult(
                        asset_key=asset.name,
                        check_name=outcome.name,
                        passed=outcome.passed,
                        description=outcome.summary,
                        metadata={
                            k: dg.MetadataValue.text(str(v)) for k, v in outcome.details.items()
                        },
                    )

    return market_data


def _series_id(asset: MarketAsset, request: SeriesRequest) -> tuple[str, ...]:
    constants = request.constants
    return tuple(str(constants[c]) for c in asset.series_key)


def _metadata(
    asset: MarketAsset,
    table: pa.Table,
    fetched: list[tuple[SeriesRequest, list[dict]]],
    days: list[date],
    paths: list[str],
    client: CoinGlassClient,
    catalog_summary: str,
) -> dict[str, Any]:
    endpoint_paths = {e.path for e in asset.endpoints}
    by_path = client.stats.by_path
    metadata: dict[str, Any] = {
        "dagster/row_count": table.num_rows,
        "series": len(fetched),
        "days_written": len(paths),
        "http_requests": sum(n for p, n in by_path.items() if p in endpoint_paths),
        "lake_path": dg.MetadataValue.path(str(paths[0]).rsplit("/date=", 1)[0]) if paths else "",
        "catalog": catalog_summary,
        "duckdb_query": dg.MetadataValue.md(
            f"```sql\nSELECT * FROM {asset.name}\n"
            f"WHERE date BETWEEN '{days[0]}' AND '{days[-1]}'\n```"
        ),
    }
    if table.num_rows:
        ts = table["ts"]
        bounds = pc.min_max(ts)
        metadata["first_bar"] = dg.MetadataValue.timestamp(bounds["min"].as_py())
        metadata["last_bar"] = dg.MetadataValue.timestamp(bounds["max"].as_py())
        metadata["preview"] = _preview(asset, table.slice(max(0, table.num_rows - PREVIEW_ROWS)))
    return metadata


def _preview(asset: MarketAsset, table: pa.Table) -> dg.MetadataValue:
    records = [
        dg.TableRecord(
            {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
        )
        for row in table.to_pylist()
    ]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, "string" if c.name == "ts" else str(c.type))
            for c in asset.columns
        ]
    )
    return dg.MetadataValue.table(records=records, schema=schema)
