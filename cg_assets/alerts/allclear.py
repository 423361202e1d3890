"""All clears: a reply to a HIGH alert once its condition has ended (`hygiene.ended_episodes`).

`telegram_alerts` calls this after the digests of an evaluation. The episodes are recomputed
every time from the lake (the coin's bars over `LOOKBACK`), so there is no state of their own
to keep or lose: the ledger key `allclear:{coin}:{rule}:{last HIGH bar}` makes one all clear
per episode, and a run that dies or fails mid-send leaves its row to be claimed again by the
next evaluation, with the ledger's at-most-one-repeat rule, like any alert.

An all clear replies to the first digest sent at one of the episode's HIGH bars that carried
the rule; an episode nobody was told about (its HIGH digests suppressed, capped or held back)
gets none. It goes out while the bar that ended the episode is at most `stale_after_bars` + 1
bars old (a failed one is retried within that window); an older one is dropped unsent, as
stale news. The daily cap does not apply: all clears are bounded by the HIGH digests that
went out, and a capped chat most needs to hear that a condition is over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import duckdb

from cg_assets.alerts.hygiene import HIGH, Episode, all_clear_text, find_ended, reply_target
from cg_assets.alerts.keys import DIGEST_PREFIX, all_clear_key, digest_bar
from cg_assets.signals.engine import ASSET as SIGNALS
from cg_assets.signals.engine import SCHEMA as SIGNALS_SCHEMA
from cg_assets.signals.snapshot import ASSET as SNAPSHOT
from cg_assets.signals.snapshot import SCHEMA as SNAPSHOT_SCHEMA
from cg_assets.storage import Lake
from cg_assets.telegram.delivery import Outcome, deliver
from cg_assets.telegram.ledger import AlertLedger, SignalRef

if TYPE_CHECKING:
    from cg_assets.telegram.sender import TelegramSender

# How far back an episode's HIGH bars are looked for; an episode that began earlier replies
# to its first HIGH digest within this window.
LOOKBACK = timedelta(days=7)

# Every bar of the configured coins since $since, and the signals on them.
BARS_SQL = """
SELECT * EXCLUDE (date)
FROM market_snapshot
WHERE list_contains($symbols, symbol) AND ts >= $since
ORDER BY symbol, ts
"""
BAR_SIGNALS_SQL = """
SELECT symbol, ts, rule, level, evidence
FROM signals
WHERE list_contains($symbols, symbol) AND ts >= $since
ORDER BY symbol, ts, rule
"""


@dataclass(frozen=True)
class AllClear:
    """An ended episode due an all clear, and the message it replies to."""

    coin: str
    episode: Episode
    reply_to: int

    @property
    def key(self) -> str:
        return all_clear_key(self.coin, self.episode.rule, self.episode.last_high)


def read_ended(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    symbols: Sequence[str],
    days: Sequence[date],
    since: datetime,
    interval: timedelta,
) -> list[tuple[str, Episode]]:
    """The ended HIGH episodes of the bars since `since` (within `days`)."""
    lake.attach(con, SNAPSHOT, days, SNAPSHOT_SCHEMA)
    lake.attach(con, SIGNALS, days, SIGNALS_SCHEMA)
    params = {"symbols": list(symbols), "since": since}
    snapshots = con.sql(BARS_SQL, params=params).to_arrow_table().to_pylist()
    signals = con.sql(BAR_SIGNALS_SQL, params=params).to_arrow_table().to_pylist()
    return find_ended(snapshots, signals, interval)


def due(
    ended: Sequence[tuple[str, Episode]],
    ledger: AlertLedger,
    now: datetime,
    window: timedelta,
) -> list[AllClear]:
    """The episodes that ended within `window` of `now` and whose HIGH was told."""
    clears: list[AllClear] = []
    for coin, episode in ended:
        if now - episode.ended_at > window:
            continue
        records = [
            r
            for r in ledger.records(coin=coin, since=episode.first_high.timestamp())
            if r.key.startswith(DIGEST_PREFIX)
        ]
        bar_of = {r.key: digest_bar(r.key)[1] for r in records}
        message_id = reply_target(coin, episode, records, bar_of)
        if message_id is not None:
            clears.append(AllClear(coin, episode, message_id))
    return clears


def send(
    ledger: AlertLedger,
    sender: TelegramSender | None,
    clear: AllClear,
    chat_id: str,
    chat_setting: str,
    suppress_reason: str,
) -> Outcome:
    """One all clear through the ledger, as a reply to the HIGH alert."""
    text = all_clear_text(clear.coin, clear.episode)
    return deliver(
        ledger,
        sender,
        key=clear.key,
        coin=clear.coin,
        signals=[SignalRef(f"all_clear:{clear.episode.rule}", HIGH)],
        chat_id=chat_id,
        render=lambda fresh, held: [text],
        reply_to=clear.reply_to,
        suppress_reason=suppress_reason,
        chat_setting=chat_setting,
    )
