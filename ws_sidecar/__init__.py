"""The WebSocket sidecar: CoinGlass `liquidationOrders` into a durable spool of JSONL segments.

A small long-running process, separate from Dagster (whose runs take seconds to start), that
holds one WebSocket subscription and publishes every liquidation it receives within about a
second. It imports neither Dagster nor `cg_assets`; `cg_assets` reads the spool through
`ws_sidecar.spool`, the only module that knows the format.

Modules: `config` (environment), `connection` (protocol, keepalive, reconnects), `parse` (pure
payload normalisation), `validate` (what a usable record is, for the sidecar and every
reader), `quarantine` (the file of refused items), `recorder` (messages and outages into
records), `sink` (bounded queue to the disk thread), `spool` (format, atomic writer, reader),
`summary` (the per-segment summaries the heads-up sensor reads), `store` (`CG_LAKE_URL`: a
local directory or an S3-compatible store, shared with `cg_assets`' lake), `publish` (closed
segments copied to the store), `health` (status file, HTTP probes, metrics), `app` (wiring and
signals).
"""
