-- The records of br-cti in PostgreSQL: the same tables as the embedded SQLite schema (at its
-- version 8), with PostgreSQL's types. Positions that readers page by are identity columns
-- (`seq`) where SQLite uses its rowid; `user` is spelled `user_name` (a reserved word here).

CREATE TABLE files (
    hash          TEXT PRIMARY KEY,
    size          BIGINT NOT NULL,
    original_name TEXT,
    created_at    BIGINT NOT NULL
);
CREATE TABLE tasks (
    task_id          TEXT PRIMARY KEY,
    source_file_hash TEXT NOT NULL REFERENCES files(hash),
    created_at       BIGINT NOT NULL
);
CREATE INDEX tasks_by_file ON tasks(source_file_hash, created_at);
CREATE TABLE task_steps (
    task_id    TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
    step       BIGINT NOT NULL,
    status     TEXT NOT NULL,
    total_num  BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, step)
);

CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             TEXT NOT NULL,
    file_hash        TEXT NOT NULL REFERENCES files(hash),
    process_id       TEXT NOT NULL,
    params           TEXT NOT NULL,
    status           TEXT NOT NULL,
    total_steps      BIGINT NOT NULL,
    steps_done       BIGINT NOT NULL DEFAULT 0,
    rows_total       BIGINT NOT NULL DEFAULT 0,
    rows_done        BIGINT NOT NULL DEFAULT 0,
    rows_rejected    BIGINT NOT NULL DEFAULT 0,
    objects          BIGINT NOT NULL DEFAULT 0,
    files            BIGINT NOT NULL DEFAULT 0,
    errors           TEXT NOT NULL DEFAULT '[]',
    recent_steps     TEXT NOT NULL DEFAULT '[]',
    message          TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    run_ms           BIGINT NOT NULL DEFAULT 0,
    attempts         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_file ON jobs(kind, file_hash, id);
CREATE INDEX jobs_unfinished ON jobs(id) WHERE status IN ('queued', 'running');
-- At most one unfinished job of a kind per file, enforced by the database for every node.
CREATE UNIQUE INDEX jobs_one_unfinished ON jobs(kind, file_hash) WHERE status IN ('queued', 'running');

CREATE TABLE stix_records (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    source_file_hash TEXT NOT NULL REFERENCES files(hash),
    stix_file_hash   TEXT NOT NULL,
    job_id           BIGINT NOT NULL REFERENCES jobs(id),
    batch            BIGINT NOT NULL,
    file_size        BIGINT NOT NULL,
    rows             BIGINT NOT NULL,
    objects          BIGINT NOT NULL,
    stix_type        BIGINT NOT NULL,
    stix_tags        TEXT NOT NULL,
    stix_iocs        TEXT NOT NULL,
    ioc_ips_map      TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    onchain          BOOLEAN NOT NULL DEFAULT false,
    cti_file_path    TEXT,
    PRIMARY KEY (source_file_hash, stix_file_hash)
);
CREATE INDEX stix_records_by_file ON stix_records(source_file_hash, seq);

CREATE TABLE cti_records (
    source_file_hash      TEXT NOT NULL,
    cti_hash              TEXT NOT NULL,
    job_id                BIGINT NOT NULL REFERENCES jobs(id),
    cti_name              TEXT NOT NULL,
    cti_type              BIGINT NOT NULL,
    cti_traffic_type      BIGINT NOT NULL,
    open_source           BIGINT NOT NULL,
    description           TEXT NOT NULL,
    tags                  TEXT NOT NULL,
    iocs                  TEXT NOT NULL,
    value                 DOUBLE PRECISION NOT NULL,
    incentive_mechanism   BIGINT NOT NULL,
    data_size             BIGINT NOT NULL,
    stix_data             TEXT NOT NULL,
    stix_ipfs_hash        TEXT NOT NULL DEFAULT '',
    statistic_info        TEXT NOT NULL,
    data_source_hash      TEXT NOT NULL,
    data_source_ipfs_hash TEXT NOT NULL DEFAULT '',
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    onchain               BOOLEAN NOT NULL DEFAULT false,
    cti_id                TEXT,
    PRIMARY KEY (source_file_hash, cti_hash),
    FOREIGN KEY (source_file_hash, cti_hash) REFERENCES stix_records(source_file_hash, stix_file_hash)
);

CREATE TABLE hd_users (
    name       TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT NOT NULL,
    tlp        TEXT NOT NULL DEFAULT 'green',
    report_tlp TEXT
);
CREATE INDEX hd_users_by_token ON hd_users(token);

CREATE TABLE hidden_dangers (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_name        TEXT NOT NULL,
    risk_id          TEXT NOT NULL,
    revision         BIGINT NOT NULL,
    unit_name        TEXT NOT NULL,
    issue_level      BIGINT NOT NULL,
    judge_state      TEXT NOT NULL,
    notice_state     TEXT NOT NULL,
    addresses        TEXT NOT NULL,
    start_ms         BIGINT NOT NULL,
    end_ms           BIGINT NOT NULL,
    data             TEXT NOT NULL,
    raw_event        TEXT NOT NULL,
    raw_event_sha256 TEXT NOT NULL,
    content_sha256   TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (user_name, risk_id)
);
CREATE INDEX hidden_dangers_by_update ON hidden_dangers(updated_at, id);
CREATE TABLE hidden_danger_revisions (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    hd_id            BIGINT NOT NULL REFERENCES hidden_dangers(id),
    revision         BIGINT NOT NULL,
    data             TEXT NOT NULL,
    raw_event        TEXT NOT NULL,
    raw_event_sha256 TEXT NOT NULL,
    received_at      BIGINT NOT NULL,
    PRIMARY KEY (hd_id, revision)
);

CREATE TABLE taxii_objects (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection   TEXT NOT NULL,
    id           TEXT NOT NULL,
    type         TEXT NOT NULL,
    version      TEXT NOT NULL,
    version_us   BIGINT NOT NULL,
    spec_version TEXT NOT NULL,
    date_added   BIGINT NOT NULL,
    is_latest    BOOLEAN NOT NULL,
    is_first     BOOLEAN NOT NULL,
    object       TEXT NOT NULL,
    tlp          BIGINT NOT NULL DEFAULT 0,
    UNIQUE (collection, id, version)
);
CREATE INDEX taxii_latest ON taxii_objects(collection, is_latest, seq);
CREATE INDEX taxii_all ON taxii_objects(collection, seq);
CREATE INDEX taxii_added ON taxii_objects(collection, date_added);
CREATE TABLE taxii_status (
    id                TEXT PRIMARY KEY,
    collection        TEXT NOT NULL,
    request_timestamp BIGINT NOT NULL,
    total             BIGINT NOT NULL,
    success_count     BIGINT NOT NULL,
    failure_count     BIGINT NOT NULL,
    successes         TEXT NOT NULL,
    failures          TEXT NOT NULL
);
CREATE TABLE taxii_grants (
    user_name  TEXT NOT NULL,
    collection TEXT NOT NULL,
    PRIMARY KEY (user_name, collection)
);
CREATE TABLE taxii_sync (
    source    TEXT PRIMARY KEY,
    watermark BIGINT NOT NULL
);
