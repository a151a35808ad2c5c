-- The spine: gateways and their ack watermark, the event history, and the stock ledger.

CREATE TABLE sites (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per gateway; the ack watermark moves in the same transaction as its events.
CREATE TABLE gateways (
    id                  text PRIMARY KEY,
    site                text NOT NULL REFERENCES sites (id),
    session             bigint NOT NULL DEFAULT 0,
    online              boolean NOT NULL DEFAULT false,
    acked_seq           bigint NOT NULL DEFAULT 0,  -- every seq up to here is committed
    max_seq             bigint NOT NULL DEFAULT 0,  -- highest seq committed (may be past a gap)
    birth_last_seq      bigint NOT NULL DEFAULT 0,  -- the edge's newest seq at its last birth
    events_received     bigint NOT NULL DEFAULT 0,
    duplicates_dropped  bigint NOT NULL DEFAULT 0,
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now()
);

-- Every event as the edge stored it; (gateway, seq) makes ingest idempotent.
CREATE TABLE events (
    gateway      text NOT NULL,
    seq          bigint NOT NULL,
    event_id     uuid NOT NULL,
    site         text NOT NULL,
    device       text NOT NULL,
    type         text NOT NULL,
    cls          smallint NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    body         jsonb NOT NULL,
    PRIMARY KEY (gateway, seq)
);

CREATE TABLE locations (
    site  text NOT NULL REFERENCES sites (id),
    code  text NOT NULL,
    kind  text NOT NULL CHECK (kind IN ('internal', 'supplier', 'customer', 'adjustment', 'scrap', 'transit')),
    PRIMARY KEY (site, code)
);

-- Insert-only, double-entry: every movement goes from a location to a location.
CREATE TABLE movements (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site           text NOT NULL,
    sku            text NOT NULL,
    lot            text NOT NULL DEFAULT '',
    from_location  text NOT NULL,
    to_location    text NOT NULL,
    quantity       numeric NOT NULL CHECK (quantity > 0),
    occurred_at    timestamptz NOT NULL,
    posted_at      timestamptz NOT NULL DEFAULT now(),
    source_gateway text,
    source_seq     bigint,
    FOREIGN KEY (site, from_location) REFERENCES locations (site, code),
    FOREIGN KEY (site, to_location) REFERENCES locations (site, code),
    CHECK (from_location <> to_location),
    UNIQUE (source_gateway, source_seq)
);

CREATE FUNCTION forbid_ledger_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is insert-only: % on movements is not allowed (post a reversal)', TG_OP;
END $$;

CREATE TRIGGER movements_insert_only BEFORE UPDATE OR DELETE ON movements
    FOR EACH ROW EXECUTE FUNCTION forbid_ledger_change();

-- The balance projection, kept in the same transaction as the movements.
CREATE TABLE balances (
    site        text NOT NULL,
    location    text NOT NULL,
    sku         text NOT NULL,
    lot         text NOT NULL DEFAULT '',
    quantity    numeric NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, location, sku, lot),
    FOREIGN KEY (site, location) REFERENCES locations (site, code)
);
