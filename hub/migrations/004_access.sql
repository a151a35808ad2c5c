-- Who may do what: people and service identities (gateways, integrations), each with
-- roles and the sites they may act on, and their credentials (API keys and the bearer
-- tokens of the OAuth2 password flow). Secrets are stored only as argon2 hashes.

CREATE TABLE identities (
    id             text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    kind           text NOT NULL CHECK (kind IN ('user', 'service')),
    display_name   text NOT NULL DEFAULT '',
    roles          text[] NOT NULL CHECK (cardinality(roles) > 0),
    sites          text[],  -- NULL: every site
    password_hash  text,    -- argon2; users only
    active         boolean NOT NULL DEFAULT true,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (kind = 'user' OR password_hash IS NULL)
);

CREATE TABLE credentials (
    id           text PRIMARY KEY,          -- the public part of the secret
    identity     text NOT NULL REFERENCES identities (id),
    kind         text NOT NULL CHECK (kind IN ('api_key', 'token')),
    name         text NOT NULL DEFAULT '',
    secret_hash  text NOT NULL,             -- argon2
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX credentials_of ON credentials (identity);
