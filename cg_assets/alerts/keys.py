"""Ledger keys of the market alerts: what makes each one unique, and so sent at most once.

Kept apart from the assets so that the digest, its all clears and the heartbeat can name each
other's keys without importing each other.
"""

from datetime import UTC, date, datetime

DIGEST_PREFIX = "digest:"
ALL_CLEAR_PREFIX = "allclear:"
HEARTBEAT_PREFIX = "heartbeat:"
_BAR_FORMAT = "%Y-%m-%dT%H:%MZ"


def digest_key(coin: str, ts: datetime) -> str:
    """The ledger key of one coin's digest for the bar starting at `ts`."""
    return f"{DIGEST_PREFIX}{coin}:{ts.astimezone(UTC):{_BAR_FORMAT}}"


def digest_bar(key: str) -> tuple[str, datetime]:
    """(coin, bar start) of a `digest_key`; ValueError names a key of another shape."""
    coin, _, stamp = key.removeprefix(DIGEST_PREFIX).partition(":")
    try:
        if not key.startswith(DIGEST_PREFIX) or not coin:
            raise ValueError
        return coin, datetime.strptime(stamp, _BAR_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"key={key!r}: expected {DIGEST_PREFIX}COIN:YYYY-MM-DDTHH:MMZ") from None


def all_clear_key(coin: str, rule: str, last_high: datetime) -> str:
    """One all clear per HIGH episode of a coin's rule, named by the episode's last HIGH bar
    (fixed once the episode has ended, however far back its start lies)."""
    return f"{ALL_CLEAR_PREFIX}{coin}:{rule}:{last_high.astimezone(UTC):{_BAR_FORMAT}}"


def heartbeat_key(day: date) -> str:
    return f"{HEARTBEAT_PREFIX}{day.isoformat()}"


def kind(key: str) -> str:
    """What sort of message a ledger key belongs to: digest, allclear, headsup, verdict, ops,
    heartbeat (the part before the first colon)."""
    return key.partition(":")[0]
