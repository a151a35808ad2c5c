-- Analyst access: readable history and the KPIs of warehouse.md, one definition for every
-- site, in a schema of its own that a read-only role (and so a BI tool) sees and nothing else.
-- docs/analyst.md documents every view and column.
--
-- Days are UTC calendar days of `occurred_at` (when it happened on the floor, not when the
-- hub posted it). Views of a site's days run from the site's first movement to today.

CREATE SCHEMA analyst;
COMMENT ON SCHEMA analyst IS
    'read-only views for analysts and BI tools; see docs/analyst.md';

-- ------------------------------------------------------------------ master data, readable

CREATE VIEW analyst.skus AS
    SELECT code AS sku, gtin, name, unit, unit_weight_kg, tracking, shelf_life_days, sku_class,
           requires_qc, pick_policy, verified, created_at
    FROM skus;

CREATE VIEW analyst.locations AS
    SELECT site, code AS location, kind, zone, gln, x, y, capacity, sku_class, held, usable
    FROM locations;

-- ------------------------------------------------------------------ history

CREATE VIEW analyst.movements AS
    SELECT m.id AS movement, m.site, m.to_site, m.sku, s.gtin, s.name AS sku_name, m.lot,
           lo.expiry, m.serial, m.lpn, m.from_location, fl.kind AS from_kind, m.to_location,
           tl.kind AS to_kind, m.from_status, m.to_status, m.quantity, s.unit, m.kind, m.reason,
           m.document, m.reverses, m.compensates, m.occurred_at, m.posted_at, m.actor,
           m.source_gateway, m.source_seq
    FROM movements m
    LEFT JOIN skus s ON s.code = m.sku
    LEFT JOIN lots lo ON lo.sku = m.sku AND lo.lot = m.lot
    LEFT JOIN locations fl ON fl.site = m.site AND fl.code = m.from_location
    LEFT JOIN locations tl ON tl.site = m.to_site AND tl.code = m.to_location;
COMMENT ON VIEW analyst.movements IS 'one row per movement of the ledger, with names';

-- Both sides of every movement: what a place lost (delta < 0) and gained (delta > 0).
CREATE VIEW analyst.legs AS
    SELECT m.id AS movement, m.site, m.from_location AS location, l.kind AS location_kind,
           m.sku, m.lot, m.serial, m.lpn, m.from_status AS status, m.kind, m.occurred_at,
           (m.occurred_at AT TIME ZONE 'UTC')::date AS day, -m.quantity AS delta
    FROM movements m JOIN locations l ON l.site = m.site AND l.code = m.from_location
    UNION ALL
    SELECT m.id, m.to_site, m.to_location, l.kind, m.sku, m.lot, m.serial, m.lpn, m.to_status,
           m.kind, m.occurred_at, (m.occurred_at AT TIME ZONE 'UTC')::date, m.quantity
    FROM movements m JOIN locations l ON l.site = m.to_site AND l.code = m.to_location;
COMMENT ON VIEW analyst.legs IS
    'both sides of every movement: delta < 0 where stock left, > 0 where it arrived';

-- Stock now: on hand per site/location/SKU/lot/status (serials and LPNs summed), reserved
-- from open reservations (they reserve available stock), available = on hand - reserved.
CREATE VIEW analyst.stock AS
    SELECT t.site, t.location, l.zone, t.sku, s.gtin, t.lot, lo.expiry, t.status,
           t.on_hand, t.reserved, t.on_hand - t.reserved AS available
    FROM (
        SELECT site, location, sku, lot, status, sum(on_hand) AS on_hand,
               sum(reserved) AS reserved
        FROM (
            SELECT site, location, sku, lot, status, quantity AS on_hand, 0 AS reserved
            FROM balances
            UNION ALL
            SELECT site, location, sku, lot, 'available', 0, quantity
            FROM reservations WHERE state = 'open'
        ) parts
        GROUP BY site, location, sku, lot, status
    ) t
    JOIN locations l ON l.site = t.site AND l.code = t.location AND l.kind = 'internal'
    LEFT JOIN skus s ON s.code = t.sku
    LEFT JOIN lots lo ON lo.sku = t.sku AND lo.lot = t.lot
    WHERE t.on_hand <> 0 OR t.reserved <> 0;
COMMENT ON VIEW analyst.stock IS
    'on hand, reserved (open reservations) and available = on hand - reserved, now';

-- One row per day on which an item's quantity at a location changed; the closing quantity
-- holds until next_change_day (a running sum of daily net changes, never a row per day).
CREATE VIEW analyst.daily_balances AS
    SELECT site, location, sku, lot, day, units_in, units_out, net_change,
           sum(net_change) OVER w AS closing_quantity,
           sum(net_change_available) OVER w AS closing_available,
           lead(day) OVER w AS next_change_day
    FROM (
        SELECT site, location, sku, lot, day,
               coalesce(sum(delta) FILTER (WHERE delta > 0), 0) AS units_in,
               coalesce(-sum(delta) FILTER (WHERE delta < 0), 0) AS units_out,
               sum(delta) AS net_change,
               coalesce(sum(delta) FILTER (WHERE status = 'available'), 0)
                   AS net_change_available
        FROM analyst.legs WHERE location_kind = 'internal'
        GROUP BY site, location, sku, lot, day
    ) daily
    WINDOW w AS (PARTITION BY site, location, sku, lot ORDER BY day);
COMMENT ON VIEW analyst.daily_balances IS
    'per day with a change, per site/location/SKU/lot: in, out, net and the closing quantity'
    ' (all statuses, and available status only), valid until next_change_day';

-- Every day of every site, from its first movement to today (sites x days is small).
CREATE VIEW analyst.site_days AS
    SELECT f.site, d::date AS day
    FROM (SELECT site, min(day) AS first_day FROM analyst.legs GROUP BY site) f,
         generate_series(f.first_day, greatest(f.first_day, (now() AT TIME ZONE 'UTC')::date),
                         interval '1 day') AS d;

-- ------------------------------------------------------------------ KPIs
-- Each KPI view is at its natural grain, with the additive parts of the KPI; a period's
-- figure is the formula in docs/analyst.md over the rows of that period.

-- Approved counts with the baseline (the ledger at the count) beside what was counted.
CREATE VIEW analyst.count_results AS
    SELECT c.site, c.location, c.id AS count_id, c.counted_at,
           (c.counted_at AT TIME ZONE 'UTC')::date AS day, c.counted_by, c.decided_by,
           count(*) AS lines,
           count(*) FILTER (WHERE cl.counted = coalesce(cl.baseline, 0)) AS lines_right,
           bool_and(cl.counted = coalesce(cl.baseline, 0)) AS accurate,
           sum(coalesce(cl.baseline, 0)) AS system_units,
           sum(cl.counted) AS counted_units,
           sum(abs(cl.counted - coalesce(cl.baseline, 0))) AS abs_variance_units
    FROM counts c JOIN count_lines cl ON cl.count_id = c.id
    WHERE c.state = 'approved'
    GROUP BY c.id;

-- inventory accuracy = sum(accurate) / count(*): locations counted right / counted.
CREATE VIEW analyst.kpi_inventory_accuracy AS
    SELECT site, location, count_id, counted_at, day, lines, lines_right, accurate
    FROM analyst.count_results;

-- unit accuracy = 1 - sum(abs_variance_units) / sum(system_units).
CREATE VIEW analyst.kpi_unit_accuracy AS
    SELECT site, location, count_id, counted_at, day, system_units, counted_units,
           abs_variance_units
    FROM analyst.count_results;

-- order picking accuracy = orders without error / orders picked; an order is picked once a
-- task of it is, and an error is any failed verification (scale, RFID or scan) of it.
CREATE VIEW analyst.kpi_order_picking_accuracy AS
    SELECT o.site, o.reference AS order_ref, max(t.picked_at) AS picked_at,
           (max(t.picked_at) AT TIME ZONE 'UTC')::date AS day,
           count(*) AS tasks_picked,
           EXISTS (
               SELECT 1 FROM verifications v LEFT JOIN pick_tasks vt ON vt.id = v.pick_task
               WHERE v.site = o.site AND coalesce(v.order_ref, vt.order_ref) = o.reference
                 AND NOT v.ok
           ) AS error_found
    FROM orders o
    JOIN pick_tasks t ON t.site = o.site AND t.order_ref = o.reference
    WHERE o.state <> 'cancelled' AND t.picked_at IS NOT NULL AND t.state <> 'cancelled'
    GROUP BY o.site, o.reference;

-- dock-to-stock: per receipt movement (a receipt line, per lot/LPN/serial), the first
-- putaway of the same item out of the place it was received into, at or after the receipt.
CREATE VIEW analyst.kpi_dock_to_stock AS
    SELECT r.to_site AS site, r.id AS receipt_movement, r.sku, r.lot, r.lpn, r.serial,
           r.document, r.to_location AS received_into, r.quantity,
           r.occurred_at AS received_at, (r.occurred_at AT TIME ZONE 'UTC')::date AS day,
           p.occurred_at AS put_away_at, p.to_location AS put_away_to,
           extract(epoch FROM p.occurred_at - r.occurred_at) / 3600 AS hours
    FROM movements r
    LEFT JOIN LATERAL (
        SELECT p.occurred_at, p.to_location FROM movements p
        WHERE p.kind = 'putaway' AND p.site = r.to_site AND p.sku = r.sku AND p.lot = r.lot
          AND p.lpn = r.lpn AND p.serial = r.serial AND p.from_location = r.to_location
          AND p.occurred_at >= r.occurred_at
          AND NOT EXISTS (SELECT 1 FROM movements x WHERE x.reverses = p.id)
        ORDER BY p.occurred_at, p.id LIMIT 1
    ) p ON true
    WHERE r.kind = 'receipt'
      AND NOT EXISTS (SELECT 1 FROM movements x WHERE x.reverses = r.id);

-- Movements into a customer location that stand: neither reversed nor reversals themselves.
CREATE VIEW analyst.shipments AS
    SELECT m.id AS movement, m.site, m.sku, m.lot, m.quantity, m.document, m.occurred_at,
           (m.occurred_at AT TIME ZONE 'UTC')::date AS day
    FROM movements m
    JOIN locations l ON l.site = m.to_site AND l.code = m.to_location AND l.kind = 'customer'
    WHERE m.kind <> 'reversal'
      AND NOT EXISTS (SELECT 1 FROM movements x WHERE x.reverses = m.id);

-- Shipped units (into a customer location, neither reversed nor a reversal) and units on hand
-- at the end of each day, per site and day: turnover = sum(units_shipped) / avg(on_hand_units).
CREATE VIEW analyst.kpi_turnover AS
    SELECT d.site, d.day, coalesce(s.units_shipped, 0) AS units_shipped,
           sum(coalesce(c.on_hand_change, 0)) OVER w AS on_hand_units
    FROM analyst.site_days d
    LEFT JOIN (
        SELECT site, day, sum(delta) AS on_hand_change FROM analyst.legs
        WHERE location_kind = 'internal' GROUP BY site, day
    ) c ON c.site = d.site AND c.day = d.day
    LEFT JOIN (
        SELECT site, day, sum(quantity) AS units_shipped FROM analyst.shipments
        GROUP BY site, day
    ) s ON s.site = d.site AND s.day = d.day
    WINDOW w AS (PARTITION BY d.site ORDER BY d.day);

-- Ship confirm - order release, per shipped order.
CREATE VIEW analyst.kpi_order_cycle_time AS
    SELECT site, reference AS order_ref, released_at, shipped_at,
           (shipped_at AT TIME ZONE 'UTC')::date AS day,
           extract(epoch FROM shipped_at - released_at) / 3600 AS hours
    FROM orders WHERE state = 'shipped' AND shipped_at IS NOT NULL;

-- Usable internal locations holding stock at the end of each day (master data as now).
CREATE VIEW analyst.kpi_location_utilisation AS
    SELECT d.site, d.day, sum(coalesce(c.change, 0)) OVER w AS occupied_locations,
           u.usable_locations,
           (sum(coalesce(c.change, 0)) OVER w)::numeric / nullif(u.usable_locations, 0)
               AS utilisation
    FROM analyst.site_days d
    JOIN (SELECT site, count(*) AS usable_locations FROM locations
          WHERE kind = 'internal' AND usable GROUP BY site) u ON u.site = d.site
    LEFT JOIN (
        -- +1 on the day a location turns occupied, -1 on the day it turns empty
        SELECT site, day, sum(change) AS change FROM (
            SELECT site, day,
                   (closing > 0)::int - (coalesce(lag(closing) OVER p, 0) > 0)::int AS change
            FROM (
                SELECT g.site, g.location, g.day, sum(sum(g.delta)) OVER (
                           PARTITION BY g.site, g.location ORDER BY g.day) AS closing
                FROM analyst.legs g
                JOIN locations l ON l.site = g.site AND l.code = g.location AND l.usable
                WHERE g.location_kind = 'internal'
                GROUP BY g.site, g.location, g.day
            ) per_location
            WINDOW p AS (PARTITION BY site, location ORDER BY day)
        ) turns GROUP BY site, day
    ) c ON c.site = d.site AND c.day = d.day
    WINDOW w AS (PARTITION BY d.site ORDER BY d.day);

-- Spells of a SKU at a usable (storage) location: from a day its available quantity changed
-- to the next change (or tomorrow), with the available quantity (all lots) held meanwhile.
-- Docks and staging lanes are empty by design: mark them usable = false.
CREATE VIEW analyst.sku_location_spells AS
    SELECT site, location, sku, day AS starts,
           coalesce(lead(day) OVER w,
                    greatest(day, (now() AT TIME ZONE 'UTC')::date) + 1) AS ends,
           sum(net) OVER w AS available
    FROM (
        SELECT g.site, g.location, g.sku, g.day,
               coalesce(sum(g.delta) FILTER (WHERE g.status = 'available'), 0) AS net
        FROM analyst.legs g
        JOIN locations l ON l.site = g.site AND l.code = g.location AND l.usable
        WHERE g.location_kind = 'internal'
        GROUP BY g.site, g.location, g.sku, g.day
    ) daily
    WINDOW w AS (PARTITION BY site, location, sku ORDER BY day);

-- SKU-location days and those with available <= 0, per site and day. A SKU-location is
-- tracked from its first movement; a day it ends with available stock <= 0 is a stockout
-- day, but an empty spell counts for at most 7 days (longer: the place was released).
-- stockout rate = sum(stockout_days) / sum(sku_location_days).
CREATE VIEW analyst.kpi_stockout_rate AS
    SELECT d.site, d.day, sum(coalesce(c.tracked, 0)) OVER w AS sku_location_days,
           sum(coalesce(c.out, 0)) OVER w AS stockout_days
    FROM analyst.site_days d
    LEFT JOIN (
        -- each spell adds 1 (tracked; out too if empty) from its first day until it ends
        SELECT site, day, sum(tracked) AS tracked, sum(out) AS out FROM (
            SELECT site, starts AS day, 1 AS tracked, (available <= 0)::int AS out
            FROM analyst.sku_location_spells
            UNION ALL
            SELECT site, CASE WHEN available > 0 THEN ends ELSE least(ends, starts + 7) END,
                   -1, -(available <= 0)::int
            FROM analyst.sku_location_spells
        ) steps GROUP BY site, day
    ) c ON c.site = d.site AND c.day = d.day
    WINDOW w AS (PARTITION BY d.site ORDER BY d.day);

-- Lines and units picked (pick movements) and shipped, per site and UTC hour; reversed
-- movements and reversals are left out. throughput = lines / hours with any of them.
CREATE VIEW analyst.kpi_throughput AS
    SELECT site, hour, sum(lines_picked) AS lines_picked, sum(units_picked) AS units_picked,
           sum(lines_shipped) AS lines_shipped, sum(units_shipped) AS units_shipped
    FROM (
        SELECT m.site, date_trunc('hour', m.occurred_at, 'UTC') AS hour, count(*) AS lines_picked,
               sum(m.quantity) AS units_picked, 0 AS lines_shipped, 0 AS units_shipped
        FROM movements m
        WHERE m.kind = 'pick' AND NOT EXISTS (SELECT 1 FROM movements x WHERE x.reverses = m.id)
        GROUP BY 1, 2
        UNION ALL
        SELECT site, date_trunc('hour', occurred_at, 'UTC'), 0, 0, count(*), sum(quantity)
        FROM analyst.shipments GROUP BY 1, 2
    ) both_kinds
    GROUP BY site, hour;

-- Spans of each device's reported state, from its device_status events: a span runs from
-- one status to the next (or now). uptime = online time / observed time.
CREATE VIEW analyst.kpi_device_uptime AS
    SELECT site, gateway, device, body ->> 'state' AS state, body ->> 'detail' AS detail,
           occurred_at AS started_at,
           coalesce(lead(occurred_at) OVER w, greatest(occurred_at, now())) AS ended_at
    FROM events WHERE type = 'device_status'
    WINDOW w AS (PARTITION BY site, device ORDER BY occurred_at, gateway, seq);

-- ------------------------------------------------------------------ the analysts' role

-- Roles belong to the cluster: another database may have made it (or be making it now).
DO $$
BEGIN
    CREATE ROLE warelink_analyst NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
GRANT USAGE ON SCHEMA analyst TO warelink_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA analyst TO warelink_analyst;
ALTER DEFAULT PRIVILEGES IN SCHEMA analyst GRANT SELECT ON TABLES TO warelink_analyst;
