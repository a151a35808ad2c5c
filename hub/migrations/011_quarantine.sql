-- Quarantine: what ingest could not use, kept with the reason instead of stopping for it.
-- An 'event' is one event of a batch (its seq is covered, so the gateway's watermark moves
-- on); a 'message' is a whole MQTT message whose envelope was unusable. A supervisor
-- releases an event (it is then applied as if it had just arrived) or dismisses either.

CREATE TABLE quarantine (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('event', 'message')),
    site         text NOT NULL,
    gateway      text NOT NULL,
    topic        text NOT NULL DEFAULT '',
    seq          bigint,                       -- the event's seq, when it could be read
    payload      bytea NOT NULL,               -- the bytes as received (a message: at most 64 KiB)
    truncated    boolean NOT NULL DEFAULT false,
    reason       text NOT NULL,
    state        text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'released', 'dismissed')),
    received_at  timestamptz NOT NULL DEFAULT now(),
    decided_at   timestamptz,
    decided_by   text,
    note         text NOT NULL DEFAULT ''
);
-- A resent batch must not quarantine the same event twice.
CREATE UNIQUE INDEX quarantine_event ON quarantine (gateway, seq)
    WHERE kind = 'event' AND seq IS NOT NULL;
CREATE INDEX quarantine_open ON quarantine (gateway, kind) WHERE state = 'open';

ALTER TABLE gateways
    -- messages of a gateway not kept because it already had the most open ones allowed
    ADD COLUMN quarantine_overflow bigint NOT NULL DEFAULT 0,
    -- gaps wider than any outbox could hold: reported, never asked for
    ADD COLUMN gap_anomalies bigint NOT NULL DEFAULT 0;
