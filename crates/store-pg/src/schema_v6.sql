-- The IOC registry (`ioc_fold`): each (indicator, STIX file) sighting once, and per indicator
-- what they say together and the `modified` of its current version. Folds hold the IOC
-- advisory lock for their transaction.
CREATE TABLE ioc_sightings (
    indicator  TEXT NOT NULL,
    file_hash  TEXT NOT NULL,
    first_us   BIGINT NOT NULL,
    last_us    BIGINT NOT NULL,
    count      BIGINT NOT NULL,
    confidence SMALLINT NOT NULL,
    valid_until_us BIGINT NOT NULL,
    PRIMARY KEY (indicator, file_hash)
);
CREATE TABLE iocs (
    indicator    TEXT PRIMARY KEY,
    first_us     BIGINT NOT NULL,
    last_us      BIGINT NOT NULL,
    files        BIGINT NOT NULL,
    observations BIGINT NOT NULL,
    confidence   SMALLINT NOT NULL,
    valid_until_us BIGINT NOT NULL,
    modified_us  BIGINT NOT NULL
);
