"""Head-end / MDMS: meter registry, interval-reading storage (SQLite or PostgreSQL), VEE, REST API.

See docs/headend.md. Storage: `storage.open_repository(dir_or_dsn)`; ingest: `ingest.Ingestor`.
"""

from amistack.headend.registry import HeadendError, Meter, MeterState
from amistack.headend.schema import (
    Alarm,
    Command,
    CommandKind,
    CommandState,
    IntervalReading,
    MeterEvent,
    StoredEvent,
    StoredReading,
    VeeFlag,
)
from amistack.headend.storage import (
    PostgresRepository,
    ReadingRepository,
    SqliteRepository,
    StoreResult,
    open_repository,
)

__all__ = [
    "Alarm",
    "Command",
    "CommandKind",
    "CommandState",
    "HeadendError",
    "IntervalReading",
    "Meter",
    "MeterEvent",
    "MeterState",
    "PostgresRepository",
    "ReadingRepository",
    "SqliteRepository",
    "StoreResult",
    "StoredEvent",
    "StoredReading",
    "VeeFlag",
    "open_repository",
]
