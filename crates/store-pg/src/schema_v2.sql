-- Leases: the node running a job, a counter of its claims (the fence of its writes) and when
-- the lease ends unless renewed (ms; NULL: never leased, claimable when running).
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_until BIGINT;
