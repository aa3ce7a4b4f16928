-- Pages of the latest versions (TAXII's default) read `(collection, is_latest, seq)`; pages
-- of other versions merge its `is_latest = false` and `is_latest = true` ranges by `seq`
-- (`taxii_page`), so `(collection, seq)`, an index every publishing commit wrote, goes.
DROP INDEX taxii_all;
