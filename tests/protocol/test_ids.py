from __future__ import annotations

import time
import uuid

from warelink.protocol.ids import new_event_id


def test_event_ids_are_ordinary_uuid7_that_sort_by_time() -> None:
    ids = [new_event_id() for _ in range(1000)]
    assert all(isinstance(i, uuid.UUID) and i.version == 7 for i in ids)
    assert all(uuid.UUID(str(i)) == i and hash(uuid.UUID(str(i))) == hash(i) for i in ids)
    assert len(set(ids)) == 1000
    millis = int(time.time() * 1000)
    assert abs((ids[0].int >> 80) - millis) < 5000  # the first 48 bits are the time
    stamps = [i.int >> 80 for i in ids]
    assert stamps == sorted(stamps)
