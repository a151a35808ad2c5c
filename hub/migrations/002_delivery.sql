-- Delivery guarantees: covered ranges that arrived early, gaps, clock skew, edge counters,
-- the devices each gateway announced, and hub → device commands with their outcomes.

ALTER TABLE gateways
    ADD COLUMN early_ranges      jsonb NOT NULL DEFAULT '[]',  -- [[first, last], …] past a gap
    ADD COLUMN gaps_detected     bigint NOT NULL DEFAULT 0,
    ADD COLUMN gaps_filled       bigint NOT NULL DEFAULT 0,
    ADD COLUMN replays_requested bigint NOT NULL DEFAULT 0,
    ADD COLUMN clock_skew_ms     double precision,             -- edge clock − hub clock
    ADD COLUMN edge_counters     jsonb NOT NULL DEFAULT '{}',  -- the gateway's own stats
    ADD COLUMN edge_counters_at  timestamptz;

COMMENT ON COLUMN gateways.acked_seq IS
    'ack watermark: every seq up to here is committed, or was dropped at the edge on purpose';
COMMENT ON COLUMN gateways.max_seq IS 'highest seq covered by a committed batch';

CREATE TABLE devices (
    site     text NOT NULL,
    gateway  text NOT NULL REFERENCES gateways (id),
    id       text NOT NULL,
    PRIMARY KEY (site, id)
);

CREATE TABLE commands (
    key          text PRIMARY KEY,
    site         text NOT NULL,
    gateway      text NOT NULL,
    device       text NOT NULL,
    action       text NOT NULL,
    args         jsonb NOT NULL DEFAULT '{}',
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_count   int NOT NULL DEFAULT 0,
    outcome      text CHECK (outcome IN ('done', 'failed', 'expired', 'rejected')),
    detail       text NOT NULL DEFAULT '',
    finished_at  timestamptz
);
CREATE INDEX commands_open ON commands (gateway) WHERE outcome IS NULL;
