-- Backups name the operation that took them (its undo finds them by it), why they were taken
-- (retention only prunes scheduled ones), their format and a description. Environments get
-- their own backup interval: NULL follows the daemon's default, 0 turns scheduled backups off.
ALTER TABLE backups ADD COLUMN operation_id BIGINT REFERENCES operations (id);
ALTER TABLE backups ADD COLUMN reason TEXT NOT NULL DEFAULT 'manual';
ALTER TABLE backups ADD COLUMN format TEXT NOT NULL DEFAULT 'aegir';
ALTER TABLE backups ADD COLUMN description TEXT;
CREATE INDEX backups_operation ON backups (operation_id);
ALTER TABLE environments ADD COLUMN backup_interval BIGINT;
