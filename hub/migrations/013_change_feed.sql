-- The change feed (DESIGN.md, decision 6): what each transaction changed, per site, in
-- commit order, with a version that grows by one per change. Row triggers gather what a
-- transaction touches (balances, device readings, exceptions, gateways, commands) into
-- change_parts; a deferred trigger folds them at commit into one row of `changes` per
-- site and notifies 'warelink_changes' with "site version". Nothing committed can be
-- missed, whichever code path wrote it: the trigger sees every row.
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

CREATE FUNCTION change_part(site text, kind text, key text, body jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO change_parts (site, kind, key, body) VALUES (site, kind, key, body)
$$;

CREATE FUNCTION feed_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM change_part(NEW.site, 'balances',
        concat_ws(E'\x1f', NEW.location, NEW.sku, NEW.lot, NEW.serial, NEW.lpn, NEW.status),
        jsonb_build_object('location', NEW.location, 'sku', NEW.sku, 'lot', NEW.lot,
                           'serial', NEW.serial, 'lpn', NEW.lpn, 'status', NEW.status,
                           'quantity', trim_scale(NEW.quantity)::text));  -- exact, as REST
    RETURN NULL;
END $$;
CREATE TRIGGER balances_feed AFTER INSERT OR UPDATE OF quantity ON balances
    FOR EACH ROW EXECUTE FUNCTION feed_balance();

CREATE FUNCTION feed_reading() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM change_part(NEW.site, 'devices', NEW.device,
        jsonb_build_object('device', NEW.device, 'gateway', NEW.gateway, 'type', NEW.type,
                           'seq', NEW.seq, 'occurred_at', NEW.occurred_at, 'body', NEW.body));
    RETURN NULL;
END $$;
CREATE TRIGGER device_readings_feed AFTER INSERT OR UPDATE ON device_readings
    FOR EACH ROW EXECUTE FUNCTION feed_reading();

CREATE FUNCTION feed_exception() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM change_part(NEW.site, 'exceptions', NEW.id::text,
        jsonb_build_object('id', NEW.id, 'kind', NEW.kind, 'subject', NEW.subject,
                           'state', NEW.state, 'assignee', NEW.assignee,
                           'opened_at', NEW.opened_at, 'resolved_at', NEW.resolved_at));
    RETURN NULL;
END $$;
CREATE TRIGGER exceptions_feed AFTER INSERT OR UPDATE OF state, assignee ON exceptions
    FOR EACH ROW EXECUTE FUNCTION feed_exception();

CREATE FUNCTION feed_command() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM change_part(NEW.site, 'commands', NEW.key,
        jsonb_build_object('key', NEW.key, 'device', NEW.device, 'action', NEW.action,
                           'outcome', NEW.outcome, 'detail', NEW.detail,
                           'finished_at', NEW.finished_at));
    RETURN NULL;
END $$;
CREATE TRIGGER commands_feed_insert AFTER INSERT ON commands
    FOR EACH ROW EXECUTE FUNCTION feed_command();
CREATE TRIGGER commands_feed_outcome AFTER UPDATE OF outcome ON commands
    FOR EACH ROW WHEN (OLD.outcome IS DISTINCT FROM NEW.outcome)
    EXECUTE FUNCTION feed_command();

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

CREATE FUNCTION feed_gateway() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM change_part(NEW.site, 'gateways', NEW.id,
        jsonb_build_object('id', NEW.id, 'online', NEW.online, 'session', NEW.session,
                           'refused_outbox', NEW.refused_outbox));
    RETURN NULL;
END $$;
CREATE TRIGGER gateways_feed_insert AFTER INSERT ON gateways
    FOR EACH ROW EXECUTE FUNCTION feed_gateway();
CREATE TRIGGER gateways_feed_update AFTER UPDATE ON gateways
    FOR EACH ROW WHEN (OLD.online IS DISTINCT FROM NEW.online
                       OR OLD.refused_outbox IS DISTINCT FROM NEW.refused_outbox)
    EXECUTE FUNCTION feed_gateway();

-- At commit: one change per site touched, its version, a notification. Fired once per
-- part (a deferred trigger is per row); the first firing folds them all, the others
-- find the transaction marked and return at once.
CREATE FUNCTION fold_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me constant xid8 := pg_current_xact_id();
    one record;
    next_version bigint;
BEGIN
    IF current_setting('warelink.folded', true) = me::text THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('warelink.folded', me::text, true);
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
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER change_parts_fold AFTER INSERT ON change_parts
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fold_changes();
