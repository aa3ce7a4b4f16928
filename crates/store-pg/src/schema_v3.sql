-- The report interface's replay protection and rate limits, shared by the nodes.
CREATE TABLE hd_requests (
    user_name   TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    sign        TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    outcome     TEXT,
    answer      TEXT,
    expires_ms  BIGINT NOT NULL,
    PRIMARY KEY (user_name, timestamp, sign)
);
CREATE INDEX hd_requests_expiry ON hd_requests(expires_ms);
CREATE TABLE hd_rate (
    user_name TEXT PRIMARY KEY,
    tokens    DOUBLE PRECISION NOT NULL,
    at_ms     BIGINT NOT NULL
);
