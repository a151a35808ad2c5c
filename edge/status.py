"""``warelink edge status``: what the gateway's outbox says, read from its file.

Works whether or not the gateway runs (SQLite WAL lets a reader in beside the writer).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from warelink.edge.config import SiteConfig
from warelink.edge.gateway import OUTBOX_FILE
from warelink.edge.outbox import read_status


def gateway_status(config: SiteConfig) -> dict[str, Any]:
    gw = config.gateway
    path = gw.data_dir / OUTBOX_FILE
    report: dict[str, Any] = {
        "gateway": gw.id,
        "site": gw.site,
        "outbox": str(path),
        "devices": [d.id for d in config.devices],
    }
    if not path.exists():
        return report | {"state": "never run", "last_seq": 0, "acked_seq": 0, "outbox_depth": 0}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        status = read_status(conn)
        running = dict(conn.execute("SELECT name, value FROM counters").fetchall())
    finally:
        conn.close()
    age = None if status.oldest_unacked_at is None else time.time() - status.oldest_unacked_at
    # What the file says now wins over the counters the gateway saved at its last tick.
    return (
        report
        | {"state": "ok", "counters_of_last_run": running}
        | {
            "session": status.session,
            "last_seq": status.last_seq,
            "acked_seq": status.acked_seq,
            "outbox_depth": status.depth,
            "outbox_depth_ledger": status.depth_ledger,
            "outbox_depth_telemetry": status.depth_telemetry,
            "outbox_retained": status.retained,
            "oldest_unacked_age_s": None if age is None else round(age, 3),
            "dropped_ledger": 0,
            "dropped_telemetry": status.dropped_telemetry,
            "outbox_used_bytes": status.used_bytes,
        }
    )


def format_status(report: dict[str, Any]) -> str:
    width = max(len(key) for key in report)
    lines = []
    for key, value in report.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {name.ljust(width)}{number:g}" for name, number in value.items()]
        else:
            lines.append(f"{key.ljust(width)}  {value}")
    return "\n".join(lines)
