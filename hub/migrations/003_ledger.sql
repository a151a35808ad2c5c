-- The authoritative ledger: master data, movements by lot/serial/LPN/status, balances as a
-- projection, reservations, the documents operations work on (advance notices, orders and
-- pick tasks, counts, adjustments, transfers), one exceptions queue, and the audit log.
--
-- Quantities live only in the ledger: a document says what is expected or decided; what
-- happened is in movements (linked by `document`), and every derived figure is a query.

-- ------------------------------------------------------------------ master data

CREATE TABLE units (
    code  text PRIMARY KEY,
    name  text NOT NULL
);
INSERT INTO units (code, name) VALUES
    ('EA', 'each'), ('CS', 'case'), ('PK', 'pack'), ('BOX', 'box'), ('PAL', 'pallet'),
    ('KG', 'kilogram'), ('G', 'gram'), ('L', 'litre'), ('M', 'metre');

ALTER TABLE sites
    ADD COLUMN name text NOT NULL DEFAULT '',
    ADD COLUMN gln  text CHECK (gln ~ '^[0-9]{13}$');

CREATE TABLE zones (
    site  text NOT NULL REFERENCES sites (id),
    code  text NOT NULL,
    name  text NOT NULL DEFAULT '',
    kind  text NOT NULL DEFAULT 'storage'
          CHECK (kind IN ('dock', 'storage', 'qc', 'staging', 'shipping')),
    PRIMARY KEY (site, code)
);

ALTER TABLE locations
    ADD COLUMN zone      text,
    ADD COLUMN gln       text CHECK (gln ~ '^[0-9]{13}$'),
    ADD COLUMN x         double precision,  -- floor-plan coordinates (metres), for the live map
    ADD COLUMN y         double precision,
    ADD COLUMN capacity  numeric CHECK (capacity >= 0),  -- units it holds; NULL: unlimited
    ADD COLUMN sku_class text,                          -- putaway rule: the class it takes
    ADD COLUMN held      boolean NOT NULL DEFAULT false,  -- stock moved in opens an exception
    ADD COLUMN usable    boolean NOT NULL DEFAULT true,   -- counts toward utilisation
    ADD FOREIGN KEY (site, zone) REFERENCES zones (site, code);

CREATE TABLE skus (
    code                 text PRIMARY KEY,
    gtin                 text UNIQUE CHECK (gtin ~ '^[0-9]{14}$'),
    name                 text NOT NULL DEFAULT '',
    unit                 text NOT NULL DEFAULT 'EA' REFERENCES units (code),
    unit_weight_kg       numeric CHECK (unit_weight_kg > 0),
    weight_tolerance_pct numeric NOT NULL DEFAULT 2 CHECK (weight_tolerance_pct >= 0),
    tracking             text NOT NULL DEFAULT 'none' CHECK (tracking IN ('none', 'lot', 'serial')),
    shelf_life_days      int CHECK (shelf_life_days > 0),
    sku_class            text,
    requires_qc          boolean NOT NULL DEFAULT false,
    pick_policy          text NOT NULL DEFAULT 'fifo' CHECK (pick_policy IN ('fifo', 'fefo')),
    verified             boolean NOT NULL DEFAULT true,  -- false: made from an unknown GTIN
    created_at           timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN skus.verified IS
    'false for a SKU the hub created because a device reported a GTIN it did not know';

CREATE TABLE lots (
    sku               text NOT NULL REFERENCES skus (code),
    lot               text NOT NULL CHECK (lot <> ''),
    expiry            date,
    first_received_at timestamptz NOT NULL DEFAULT now(),  -- FIFO order
    PRIMARY KEY (sku, lot)
);

CREATE TABLE serials (
    sku     text NOT NULL REFERENCES skus (code),
    serial  text NOT NULL CHECK (serial <> ''),
    epc     text UNIQUE,  -- hex, when the item carries an RFID tag (SGTIN-96)
    PRIMARY KEY (sku, serial)
);

CREATE TABLE lpns (
    code        text PRIMARY KEY,  -- licence plate: an SSCC for pallets
    site        text REFERENCES sites (id),
    epc         text UNIQUE,       -- hex, SSCC-96
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- ------------------------------------------------------------------ the ledger

-- Movements take a lot, serial, licence plate and stock status, may cross sites (transit),
-- and say what they are and why. A device event may post several (a compensation, say).
ALTER TABLE movements DISABLE TRIGGER movements_insert_only;
ALTER TABLE movements
    ADD COLUMN to_site      text,
    ADD COLUMN serial       text NOT NULL DEFAULT '',
    ADD COLUMN lpn          text NOT NULL DEFAULT '',
    ADD COLUMN from_status  text NOT NULL DEFAULT 'available',
    ADD COLUMN to_status    text NOT NULL DEFAULT 'available',
    ADD COLUMN kind         text NOT NULL DEFAULT 'move',
    ADD COLUMN reason       text,
    ADD COLUMN document     text,   -- what it fulfils: 'asn:7/2', 'pick:12', 'count:3', …
    ADD COLUMN leg          smallint NOT NULL DEFAULT 0,
    ADD COLUMN reverses     bigint REFERENCES movements (id),
    ADD COLUMN compensates  bigint REFERENCES movements (id),
    ADD COLUMN actor        text;   -- who posted it: a user, or 'gateway:<id>'
UPDATE movements SET to_site = site,
    kind = CASE WHEN from_location = 'SUPPLIER' THEN 'receipt'
                WHEN to_location = 'CUSTOMER' THEN 'ship' ELSE 'move' END,
    actor = 'gateway:' || source_gateway;
ALTER TABLE movements ENABLE TRIGGER movements_insert_only;
ALTER TABLE movements
    ALTER COLUMN to_site SET NOT NULL,
    DROP CONSTRAINT movements_check,
    DROP CONSTRAINT movements_site_to_location_fkey,
    DROP CONSTRAINT movements_source_gateway_source_seq_key,
    ADD FOREIGN KEY (to_site, to_location) REFERENCES locations (site, code),
    ADD CONSTRAINT movements_moves CHECK (
        site <> to_site OR from_location <> to_location OR from_status <> to_status),
    ADD CONSTRAINT movements_statuses CHECK (
        from_status IN ('available', 'qc_hold', 'damaged')
        AND to_status IN ('available', 'qc_hold', 'damaged')),
    ADD CONSTRAINT movements_kinds CHECK (kind IN (
        'receipt', 'putaway', 'move', 'pick', 'ship', 'return', 'qc_release', 'qc_reject',
        'transfer_out', 'transfer_in', 'count', 'adjustment', 'compensation', 'reversal')),
    ADD CONSTRAINT movements_serial_is_one CHECK (serial = '' OR quantity = 1),
    ADD UNIQUE (source_gateway, source_seq, leg);
CREATE UNIQUE INDEX movements_reversed_once ON movements (reverses) WHERE reverses IS NOT NULL;
CREATE INDEX movements_by_item ON movements (site, sku, lot, occurred_at);
CREATE INDEX movements_by_document ON movements (document) WHERE document IS NOT NULL;
COMMENT ON COLUMN movements.document IS
    'the document a movement fulfils, "<kind>:<id>[/<line>]"; received and picked quantities'
    ' are sums over it, never stored';

-- Balances by location, SKU, lot, serial, licence plate and status: a projection of the
-- movements, updated in the same transaction, rows locked in key order.
DROP TABLE balances;
CREATE TABLE balances (
    site        text NOT NULL,
    location    text NOT NULL,
    sku         text NOT NULL,
    lot         text NOT NULL DEFAULT '',
    serial      text NOT NULL DEFAULT '',
    lpn         text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'available',
    quantity    numeric NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, location, sku, lot, serial, lpn, status),
    FOREIGN KEY (site, location) REFERENCES locations (site, code)
);
CREATE INDEX balances_by_sku ON balances (sku, lot);

-- Unknown GTINs already in the ledger become unverified SKUs, so movements can point at skus.
INSERT INTO skus (code, gtin, verified)
    SELECT DISTINCT sku, CASE WHEN sku ~ '^[0-9]{14}$' THEN sku END, false FROM movements
    ON CONFLICT DO NOTHING;
INSERT INTO balances (site, location, sku, lot, serial, lpn, status, quantity)
    SELECT site, location, sku, lot, serial, lpn, status, sum(quantity) FROM (
        SELECT site, from_location AS location, sku, lot, serial, lpn, from_status AS status,
               -quantity AS quantity FROM movements
        UNION ALL
        SELECT to_site, to_location, sku, lot, serial, lpn, to_status, quantity FROM movements
    ) legs GROUP BY 1, 2, 3, 4, 5, 6, 7;
ALTER TABLE movements ADD FOREIGN KEY (sku) REFERENCES skus (code);

-- Reservations are the one source of reserved quantity (never stored beside balances).
CREATE TABLE reservations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site        text NOT NULL,
    location    text NOT NULL,
    sku         text NOT NULL REFERENCES skus (code),
    lot         text NOT NULL DEFAULT '',
    serial      text NOT NULL DEFAULT '',
    lpn         text NOT NULL DEFAULT '',
    quantity    numeric NOT NULL CHECK (quantity > 0),
    document    text NOT NULL,  -- 'pick:<task id>'
    state       text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'consumed', 'released')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz,
    FOREIGN KEY (site, location) REFERENCES locations (site, code)
);
CREATE INDEX reservations_open ON reservations (site, sku, lot, location) WHERE state = 'open';

-- ------------------------------------------------------------------ documents

-- REST writes carry an Idempotency-Key: a retry gets the stored answer, the same key with
-- another body gets 422.
CREATE TABLE api_requests (
    actor        text NOT NULL,
    key          text NOT NULL,
    fingerprint  text NOT NULL,
    status       int NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);

CREATE TABLE advance_notices (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text NOT NULL REFERENCES sites (id),
    reference    text NOT NULL,
    supplier     text NOT NULL DEFAULT '',
    expected_at  timestamptz,
    state        text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'cancelled')),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site, reference)
);
CREATE TABLE advance_notice_lines (
    notice    bigint NOT NULL REFERENCES advance_notices (id),
    line      int NOT NULL,
    sku       text NOT NULL REFERENCES skus (code),
    lot       text NOT NULL DEFAULT '',
    expiry    date,
    quantity  numeric NOT NULL CHECK (quantity > 0),  -- expected; received: movements 'asn:N/L'
    PRIMARY KEY (notice, line)
);

CREATE TABLE orders (
    site         text NOT NULL REFERENCES sites (id),
    reference    text NOT NULL,
    customer     text NOT NULL DEFAULT '',
    released_at  timestamptz NOT NULL DEFAULT now(),
    released_by  text NOT NULL,
    state        text NOT NULL DEFAULT 'released'
                 CHECK (state IN ('released', 'picked', 'shipped', 'cancelled')),
    shipped_at   timestamptz,
    PRIMARY KEY (site, reference)
);

CREATE TABLE pick_tasks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text NOT NULL,
    order_ref    text NOT NULL,
    sku          text NOT NULL REFERENCES skus (code),
    lot          text NOT NULL DEFAULT '',
    location     text NOT NULL,          -- suggested source (FIFO/FEFO)
    to_location  text NOT NULL,          -- staging / packing
    quantity     numeric NOT NULL CHECK (quantity > 0),
    state        text NOT NULL DEFAULT 'open'
                 CHECK (state IN ('open', 'picked', 'verified', 'shipped', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    picked_by    text,
    picked_at    timestamptz,
    FOREIGN KEY (site, order_ref) REFERENCES orders (site, reference),
    FOREIGN KEY (site, location) REFERENCES locations (site, code),
    FOREIGN KEY (site, to_location) REFERENCES locations (site, code)
);

CREATE TABLE verifications (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site             text NOT NULL,
    order_ref        text,
    pick_task        bigint REFERENCES pick_tasks (id),
    sku              text NOT NULL,
    lot              text NOT NULL DEFAULT '',
    quantity         numeric NOT NULL,
    method           text NOT NULL CHECK (method IN ('scale', 'rfid', 'scan')),
    weight_kg        numeric,
    expected_kg      numeric,
    tolerance_kg     numeric,
    ok               boolean NOT NULL,
    detail           text NOT NULL DEFAULT '',
    actor            text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    source_gateway   text,
    source_seq       bigint,
    UNIQUE (source_gateway, source_seq)
);

CREATE TABLE transfers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_site   text NOT NULL REFERENCES sites (id),
    to_site     text NOT NULL REFERENCES sites (id),
    state       text NOT NULL DEFAULT 'in_transit'
                CHECK (state IN ('in_transit', 'received', 'cancelled')),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (from_site <> to_site)
);

-- Cycle counts: the count line keeps the baseline (the ledger's quantity as of the count)
-- beside what was counted; approval posts the difference as a 'count' movement.
CREATE TABLE counts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text NOT NULL,
    location     text NOT NULL,
    state        text NOT NULL DEFAULT 'open'
                 CHECK (state IN ('open', 'counted', 'recount', 'approved', 'rejected')),
    recount_of   bigint REFERENCES counts (id),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    counted_by   text,
    counted_at   timestamptz,
    decided_by   text,
    decided_at   timestamptz,
    FOREIGN KEY (site, location) REFERENCES locations (site, code)
);
CREATE INDEX counts_approved ON counts (site, location, counted_at) WHERE state = 'approved';
CREATE TABLE count_lines (
    count_id  bigint NOT NULL REFERENCES counts (id),
    sku       text NOT NULL REFERENCES skus (code),
    lot       text NOT NULL DEFAULT '',
    baseline  numeric,            -- the ledger's quantity as of counted_at, set on approval
    counted   numeric NOT NULL CHECK (counted >= 0),
    PRIMARY KEY (count_id, sku, lot)
);

CREATE TABLE reason_codes (
    code         text PRIMARY KEY,
    description  text NOT NULL
);
INSERT INTO reason_codes (code, description) VALUES
    ('DAMAGED', 'damaged in the warehouse'), ('LOST', 'not found'), ('FOUND', 'found stock'),
    ('EXPIRED', 'past its expiry date'), ('SAMPLE', 'taken as a sample'),
    ('CORRECTION', 'correction of an earlier mistake'), ('THEFT', 'theft');

CREATE TABLE adjustments (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site          text NOT NULL,
    location      text NOT NULL,
    sku           text NOT NULL REFERENCES skus (code),
    lot           text NOT NULL DEFAULT '',
    serial        text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'available',
    quantity      numeric NOT NULL CHECK (quantity <> 0),  -- the change: + found, − lost
    reason        text NOT NULL REFERENCES reason_codes (code),
    note          text NOT NULL DEFAULT '',
    state         text NOT NULL CHECK (state IN ('pending', 'posted', 'rejected')),
    requested_by  text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    decided_by    text,
    decided_at    timestamptz,
    FOREIGN KEY (site, location) REFERENCES locations (site, code)
);

-- ------------------------------------------------------------------ exceptions and audit

-- One queue. An exception is raised (owner), helped (support) and reviewed (reviewer);
-- `subject` keeps one open exception per thing that is wrong.
CREATE TABLE exceptions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site           text NOT NULL,
    kind           text NOT NULL CHECK (kind IN (
                       'negative_balance', 'verify_mismatch', 'unknown_sku', 'unknown_epc',
                       'held_location', 'count_variance', 'serial_conflict', 'floor_report')),
    subject        text NOT NULL,
    detail         jsonb NOT NULL DEFAULT '{}',
    state          text NOT NULL DEFAULT 'open'
                   CHECK (state IN ('open', 'in_review', 'resolved', 'dismissed')),
    owner_role     text NOT NULL,
    support_role   text NOT NULL,
    reviewer_role  text NOT NULL,
    assignee       text,
    opened_by      text NOT NULL,
    opened_at      timestamptz NOT NULL DEFAULT now(),
    resolved_by    text,
    resolved_at    timestamptz,
    resolution     text,
    movement       bigint REFERENCES movements (id)
);
CREATE UNIQUE INDEX exceptions_one_open ON exceptions (site, kind, subject)
    WHERE state IN ('open', 'in_review');
CREATE INDEX exceptions_queue ON exceptions (site, state, opened_at);

CREATE TABLE audit_log (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,
    action   text NOT NULL,
    site     text,
    subject  text NOT NULL DEFAULT '',
    detail   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_by_site ON audit_log (site, at);
CREATE TRIGGER audit_log_insert_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION forbid_ledger_change();

CREATE OR REPLACE FUNCTION forbid_ledger_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the % table is insert-only: % is not allowed (post a reversal)',
        TG_TABLE_NAME, TG_OP;
END $$;

-- Every site has its virtual locations, the other side of every double entry.
CREATE FUNCTION add_virtual_locations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO locations (site, code, kind) VALUES
        (NEW.id, 'SUPPLIER', 'supplier'), (NEW.id, 'CUSTOMER', 'customer'),
        (NEW.id, 'ADJUSTMENT', 'adjustment'), (NEW.id, 'SCRAP', 'scrap'),
        (NEW.id, 'TRANSIT', 'transit')
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;
CREATE TRIGGER sites_virtual_locations AFTER INSERT ON sites
    FOR EACH ROW EXECUTE FUNCTION add_virtual_locations();
INSERT INTO locations (site, code, kind)
    SELECT s.id, v.code, v.kind FROM sites s, (VALUES ('SUPPLIER', 'supplier'),
        ('CUSTOMER', 'customer'), ('ADJUSTMENT', 'adjustment'), ('SCRAP', 'scrap'),
        ('TRANSIT', 'transit')) AS v (code, kind)
    ON CONFLICT DO NOTHING;
