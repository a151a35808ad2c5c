-- The change feed (DESIGN.md, decision 6): what each transaction changed, per site, in
-- commit order, with a version that grows by one per change. Statement triggers gather
-- what a transaction touches (balances, device readings, exceptions, gateways, commands)
-- into change_parts, one INSERT … SELECT per statement from its transition table; the
-- first of them in a transaction also queues one deferred trigger, which folds the parts
-- at commit into one row of `changes` per site and notifies 'warelink_changes' with
-- "site version". Nothing committed can be missed, whichever code path wrote it.
--
-- Versions of a site are taken at commit under the site's row lock in site_versions, in
-- site order, after every other lock of the transaction: concurrent writers (ingest on
-- any hub, REST on any hub) serialise only for that last step and never deadlock there.

CREATE TABLE feed_epoch (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch  text NOT NULL  -- a client's versions are of this database: another one means resync
);
INSERT INTO feed_epoch (epoch) VALUES (md5(random()::text || clock_timestamp()::text));

CREATE TABLE site_versions (
    site     text PRIMARY KEY,
    version  bigint NOT NULL DEFAULT 0
);

CREATE TABLE changes (
    site     text NOT NULL,
    version  bigint NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    body     jsonb NOT NULL,  -- {"balances": [...], "devices": [...], "exceptions": [...], ...}
    PRIMARY KEY (site, version)
);
CREATE INDEX changes_at ON changes (at);  -- for pruning past the retained window

-- Gathered within one transaction, folded and deleted at its commit: never seen by others.
-- change_marks holds one row per transaction that has parts: its deferred trigger folds.
CREATE UNLOGGED TABLE change_marks (tx xid8 PRIMARY KEY);
CREATE UNLOGGED TABLE change_parts (
    id    bigint GENERATED ALWAYS AS IDENTITY,
    tx    xid8 NOT NULL DEFAULT pg_current_xact_id(),
    site  text NOT NULL,
    kind  text NOT NULL,  -- balances, devices, exceptions, gateways, commands
    key   text NOT NULL,  -- one entry per key and kind in a change: the latest wins
    body  jsonb NOT NULL
);
CREATE INDEX change_parts_tx ON change_parts (tx, site);

-- The latest reading of each device, for the live snapshot (written by ingest).
CREATE TABLE device_readings (
    site         text NOT NULL,
    device       text NOT NULL,
    gateway      text NOT NULL,
    type         text NOT NULL,
    seq          bigint NOT NULL,
    occurred_at  timestamptz NOT NULL,
    body         jsonb NOT NULL,
    PRIMARY KEY (site, device)
);

-- Outbox identity (DESIGN.md, decision 7): seqs are unique within one outbox only. The
-- hub acks a gateway's seqs for its current outbox; a successor (every seq past what the
-- hub holds) retires the one before it; any other outbox under the id is refused, loudly.
ALTER TABLE gateways
    ADD COLUMN outbox text,                 -- the current outbox's identity
    ADD COLUMN refused_outbox text,         -- the latest outbox refused under this id
    ADD COLUMN refused_session bigint,      -- and its session: a copy of the current outbox
    ADD COLUMN refused_at timestamptz,
    ADD COLUMN refused_messages bigint NOT NULL DEFAULT 0;

CREATE TABLE gateway_outboxes (
    gateway        text NOT NULL REFERENCES gateways (id),
    outbox         text NOT NULL,
    state          text NOT NULL CHECK (state IN ('current', 'retired', 'refused')),
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway, outbox)
);

ALTER TABLE exceptions DROP CONSTRAINT exceptions_kind_check;
ALTER TABLE exceptions ADD CONSTRAINT exceptions_kind_check CHECK (kind IN (
    'negative_balance', 'verify_mismatch', 'unknown_sku', 'unknown_epc', 'held_location',
    'count_variance', 'serial_conflict', 'floor_report', 'outbox_conflict'));

-- One deferred fold per transaction: the first statement with parts marks it.
CREATE FUNCTION mark_changes() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    me constant text := pg_current_xact_id()::text;
BEGIN
    IF current_setting('warelink.marked', true) IS DISTINCT FROM me THEN
        INSERT INTO change_marks (tx) VALUES (me::xid8) ON CONFLICT DO NOTHING;
        PERFORM set_config('warelink.marked', me, true);
    END IF;
END $$;

CREATE FUNCTION feed_balances() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_parts (site, kind, key, body)
    SELECT site, 'balances', concat_ws(E'\x1f', location, sku, lot, serial, lpn, status),
           jsonb_build_object('location', location, 'sku', sku, 'lot', lot, 'serial', serial,
                              'lpn', lpn, 'status', status,
                              'quantity', trim_scale(quantity)::text)  -- exact, as REST
    FROM changed;
    IF FOUND THEN PERFORM mark_changes(); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER balances_feed_insert AFTER INSERT ON balances
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_balances();
CREATE TRIGGER balances_feed_update AFTER UPDATE ON balances
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_balances();

CREATE FUNCTION feed_readings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_parts (site, kind, key, body)
    SELECT site, 'devices', device,
           jsonb_build_object('device', device, 'gateway', gateway, 'type', type, 'seq', seq,
                              'occurred_at', occurred_at, 'body', body)
    FROM changed;
    IF FOUND THEN PERFORM mark_changes(); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER device_readings_feed_insert AFTER INSERT ON device_readings
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_readings();
CREATE TRIGGER device_readings_feed_update AFTER UPDATE ON device_readings
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_readings();

CREATE FUNCTION feed_exceptions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_parts (site, kind, key, body)
    SELECT site, 'exceptions', id::text,
           jsonb_build_object('id', id, 'kind', kind, 'subject', subject, 'state', state,
                              'assignee', assignee, 'opened_at', opened_at,
                              'resolved_at', resolved_at)
    FROM changed;
    IF FOUND THEN PERFORM mark_changes(); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER exceptions_feed_insert AFTER INSERT ON exceptions
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_exceptions();
CREATE TRIGGER exceptions_feed_update AFTER UPDATE ON exceptions
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_exceptions();

CREATE FUNCTION feed_commands() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_parts (site, kind, key, body)
    SELECT site, 'commands', key,
           jsonb_build_object('key', key, 'device', device, 'action', action,
                              'outcome', outcome, 'detail', detail, 'finished_at', finished_at)
    FROM changed;
    IF FOUND THEN PERFORM mark_changes(); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER commands_feed_insert AFTER INSERT ON commands
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_commands();
CREATE TRIGGER commands_feed_update AFTER UPDATE ON commands
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_commands();

-- Gateways: their rows change with every flush (watermarks); only presence and refusals
-- are news, and a row trigger's WHEN skips the rest without calling anything.
CREATE FUNCTION feed_gateway() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_parts (site, kind, key, body) VALUES (NEW.site, 'gateways', NEW.id,
        jsonb_build_object('id', NEW.id, 'online', NEW.online, 'session', NEW.session,
                           'refused_outbox', NEW.refused_outbox));
    PERFORM mark_changes();
    RETURN NULL;
END $$;
CREATE TRIGGER gateways_feed_insert AFTER INSERT ON gateways
    FOR EACH ROW EXECUTE FUNCTION feed_gateway();
CREATE TRIGGER gateways_feed_update AFTER UPDATE ON gateways
    FOR EACH ROW WHEN (OLD.online IS DISTINCT FROM NEW.online
                       OR OLD.refused_outbox IS DISTINCT FROM NEW.refused_outbox)
    EXECUTE FUNCTION feed_gateway();

-- At commit (the deferred trigger of the transaction's mark): one change per site
-- touched, its version, a notification.
CREATE FUNCTION fold_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me constant xid8 := NEW.tx;
    one record;
    next_version bigint;
BEGIN
    FOR one IN SELECT DISTINCT site FROM change_parts WHERE tx = me ORDER BY site LOOP
        INSERT INTO site_versions (site) VALUES (one.site) ON CONFLICT DO NOTHING;
        UPDATE site_versions SET version = version + 1 WHERE site = one.site
            RETURNING version INTO next_version;
        INSERT INTO changes (site, version, at, body)  -- at: the commit, not the start
            SELECT one.site, next_version, clock_timestamp(), jsonb_object_agg(kind, items)
            FROM (
                SELECT kind, jsonb_agg(body ORDER BY id) AS items
                FROM (
                    SELECT DISTINCT ON (kind, key) kind, key, body, id
                    FROM change_parts WHERE tx = me AND site = one.site
                    ORDER BY kind, key, id DESC
                ) latest
                GROUP BY kind
            ) per_kind;
        PERFORM pg_notify('warelink_changes', one.site || ' ' || next_version);
    END LOOP;
    DELETE FROM change_parts WHERE tx = me;
    DELETE FROM change_marks WHERE tx = me;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER change_marks_fold AFTER INSERT ON change_marks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fold_changes();
