"""The lake (Parquet, the record) and its DuckDB catalog as one Dagster resource."""

from __future__ import annotations

import dagster as dg

from cg_assets.storage import Catalog, Lake


class LakeResource(dg.ConfigurableResource):
    """Where assets write their days and where the catalog of views lives (CG_DATA_DIR)."""

    data_dir: str

    @property
    def lake(self) -> Lake:
        return Lake(self.data_dir)

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.lake)
