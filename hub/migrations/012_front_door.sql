-- The front door: the API key made from WARELINK_BOOTSTRAP_API_KEY is marked as such, so
-- a hub that starts without the variable (or with another key in it) revokes it.

ALTER TABLE credentials ADD COLUMN bootstrap boolean NOT NULL DEFAULT false;

UPDATE credentials SET bootstrap = true
    WHERE identity = 'bootstrap-admin' AND kind = 'api_key' AND created_by = 'hub'
      AND name = 'bootstrap';

CREATE INDEX credentials_bootstrap_live ON credentials (id) WHERE bootstrap AND revoked_at IS NULL;
