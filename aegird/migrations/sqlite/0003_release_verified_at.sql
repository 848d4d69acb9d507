-- When release verify last read the codebase; and a package list that is a list from the
-- start (0001 defaulted it to an empty object).
ALTER TABLE releases ADD COLUMN verified_at INTEGER;
UPDATE releases SET packages = '[]' WHERE packages = '{}';
