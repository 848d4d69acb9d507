-- Aegir 3 import. `imported` maps each Aegir 3 object (by install, kind and nid) to the record
-- it became, with the fingerprint of what was imported, so a second import changes only what
-- changed in Aegir 3. `origin` holds the Aegir 3 facts of a record as JSON. An environment is
-- `managed_by` Aegir 3 until it is taken over: aegird then only reads it. A server's secrets
-- (the database admin account) are kept apart from the server row, never returned by the API.
ALTER TABLE servers ADD COLUMN origin TEXT;
ALTER TABLE releases ADD COLUMN origin TEXT;
ALTER TABLE environments ADD COLUMN origin TEXT;
ALTER TABLE environments ADD COLUMN client TEXT;
ALTER TABLE environments ADD COLUMN db_server_id INTEGER REFERENCES servers (id);
ALTER TABLE environments ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'aegird';
ALTER TABLE environments ADD COLUMN retention TEXT;

CREATE TABLE server_secrets (
    server_id INTEGER NOT NULL REFERENCES servers (id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (server_id, name)
);

CREATE TABLE imported (
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    ref_key TEXT NOT NULL,
    local_id INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT '{}',
    first_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    PRIMARY KEY (source, kind, ref_key)
);
