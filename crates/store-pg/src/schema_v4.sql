-- TAXII objects are found by a hash index on their id instead of the unique B-tree on
-- (collection, id, version). That index took the ids in random order and grew to ~120 bytes
-- an entry, so past a million objects each publishing transaction dirtied thousands of its
-- pages (and wrote each as a full page image after a checkpoint); a hash index entry is a
-- 4-byte hash and a row pointer. The uniqueness of (collection, id, version) is kept by
-- `taxii_add`, which holds the TAXII advisory lock for its transaction.
ALTER TABLE taxii_objects DROP CONSTRAINT taxii_objects_collection_id_version_key;
CREATE INDEX taxii_by_id ON taxii_objects USING hash (id);
