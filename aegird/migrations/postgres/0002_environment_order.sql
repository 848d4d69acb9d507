-- The environment list sorts by uri over all rows (deleted ones included); the partial unique
-- index cannot serve that order, so without this every page sorted the whole table.
CREATE INDEX environments_uri_id ON environments (uri, id);
