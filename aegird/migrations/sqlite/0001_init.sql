-- Inventory, operations and tokens. Times are integer milliseconds since the epoch; JSON is
-- text. Booleans are 0/1 integers so the SQLite and PostgreSQL schemas read the same way.

CREATE TABLE servers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    transport TEXT NOT NULL CHECK (transport IN ('local', 'ssh')),
    ssh_user TEXT,
    ssh_host TEXT,
    ssh_port INTEGER,
    status TEXT NOT NULL,
    services TEXT NOT NULL DEFAULT '{}',
    verified_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE clusters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    api_url TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL CHECK (source IN ('git', 'path')),
    git_url TEXT,
    git_ref TEXT,
    path TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    server_id INTEGER REFERENCES servers (id),
    git_ref TEXT,
    path TEXT,
    app_kind TEXT,
    app_version TEXT,
    docroot TEXT,
    packages TEXT NOT NULL DEFAULT '{}',
    locked INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE environments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uri TEXT NOT NULL,
    release_id INTEGER NOT NULL REFERENCES releases (id),
    server_id INTEGER NOT NULL REFERENCES servers (id),
    status TEXT NOT NULL,
    https TEXT NOT NULL,
    aliases TEXT NOT NULL DEFAULT '[]',
    redirect_aliases INTEGER NOT NULL DEFAULT 0,
    db_name TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
-- A deleted environment stays as history; its uri can be used again.
CREATE UNIQUE INDEX environments_live_uri ON environments (uri) WHERE status <> 'deleted';

CREATE TABLE operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id INTEGER NOT NULL,
    target_name TEXT NOT NULL,
    target_key TEXT NOT NULL,
    mutating INTEGER NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    params TEXT NOT NULL DEFAULT '{}',
    retry_of INTEGER REFERENCES operations (id),
    attempt INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    error TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER
);
CREATE INDEX operations_status ON operations (status, id);
CREATE INDEX operations_target ON operations (target_key, status);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id INTEGER NOT NULL REFERENCES operations (id),
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT NOT NULL DEFAULT 'null',
    error TEXT,
    started_at INTEGER,
    finished_at INTEGER,
    UNIQUE (operation_id, seq)
);

CREATE TABLE task_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id INTEGER NOT NULL REFERENCES operations (id),
    task_seq INTEGER,
    ts INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX task_logs_operation ON task_logs (operation_id, id);
-- Logs are evidence: once written they are never changed.
CREATE TRIGGER task_logs_no_update BEFORE UPDATE ON task_logs
BEGIN SELECT RAISE(ABORT, 'task logs are append-only'); END;
CREATE TRIGGER task_logs_no_delete BEFORE DELETE ON task_logs
BEGIN SELECT RAISE(ABORT, 'task logs are append-only'); END;

CREATE TABLE backups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    environment_id INTEGER NOT NULL REFERENCES environments (id),
    path TEXT NOT NULL,
    size INTEGER,
    sha256 TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX backups_environment ON backups (environment_id, created_at);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    -- SHA-256 of the token; the token itself is shown once and never stored.
    token_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
