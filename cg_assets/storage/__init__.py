"""The lake: Parquet files are the record, a DuckDB file is only a catalog of views over them."""

from cg_assets.storage.catalog import Catalog, CatalogStatus
from cg_assets.storage.ingested import IngestedRanges
from cg_assets.storage.lake import Lake

__all__ = ["Catalog", "CatalogStatus", "IngestedRanges", "Lake"]
