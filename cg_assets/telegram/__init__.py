"""Telegram delivery below the domains: the Bot API client (`sender`), the alert ledger
(`ledger`), one alert end to end (`delivery`) and HTML escaping (`markup`).

It sits on the client floor beside `coinglass`, so market alerts, heads-ups and ops messages
from any domain go through one ledger and one sender (`cg_assets.resources.telegram` is the
Dagster resource over it). Nothing here imports Dagster, and the Telegram client is imported
only when a message is sent.
"""
