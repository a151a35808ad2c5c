-- Movements keep their references (SKU, from and to location) by the ledger's own code,
-- not by foreign keys: the three per-row FK checks made posting three times slower
-- (53k vs 166k rows/s measured on this machine kind). hub/ledger.py `post` creates any
-- location or SKU a leg names before inserting it, and `warelink hub ledger check`
-- reports a movement whose SKU or location is missing, so the guarantee is still checked.
ALTER TABLE movements
    DROP CONSTRAINT movements_site_from_location_fkey,
    DROP CONSTRAINT movements_to_site_to_location_fkey,
    DROP CONSTRAINT movements_sku_fkey;
