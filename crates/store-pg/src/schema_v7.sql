-- Objects of the node's own STIX files are served from the files (`TaxiiBody::InFile`):
-- `body_ref` holds where (44 bytes) and `object` is empty. Copying each line into the
-- database was about a third of the publisher's writing after a conversion.
ALTER TABLE taxii_objects ADD COLUMN body_ref BYTEA;
