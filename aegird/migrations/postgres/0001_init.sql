-- Inventory, operations and tokens (PostgreSQL twin of the SQLite schema). Times are integer
-- milliseconds since the epoch; JSON is text. Booleans are 0/1 integers so the SQLite and
-- PostgreSQL schemas read the same way. Names and uris use the "C" collation so they sort
-- byte-wise, as in SQLite, whatever the database's locale.

CREATE TABLE servers (
    id BIGSERIAL PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    transport TEXT NOT NULL CHECK (transport IN ('local', 'ssh')),
    ssh_user TEXT,
    ssh_host TEXT,
    ssh_port BIGINT,
    status TEXT NOT NULL,
    services TEXT NOT NULL DEFAULT '{}',
    verified_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE clusters (
    id BIGSERIAL PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    api_url TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE projects (
    id BIGSERIAL PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    source TEXT NOT NULL CHECK (source IN ('git', 'path')),
    git_url TEXT,
    git_ref TEXT,
    path TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE releases (
    id BIGSERIAL PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    project_id BIGINT NOT NULL REFERENCES projects (id),
    server_id BIGINT REFERENCES servers (id),
    git_ref TEXT,
    path TEXT,
    app_kind TEXT,
    app_version TEXT,
    docroot TEXT,
    packages TEXT NOT NULL DEFAULT '{}',
    locked BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE environments (
    id BIGSERIAL PRIMARY KEY,
    uri TEXT COLLATE "C" NOT NULL,
    release_id BIGINT NOT NULL REFERENCES releases (id),
    server_id BIGINT NOT NULL REFERENCES servers (id),
    status TEXT NOT NULL,
    https TEXT NOT NULL,
    aliases TEXT NOT NULL DEFAULT '[]',
    redirect_aliases BIGINT NOT NULL DEFAULT 0,
    db_name TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- A deleted environment stays as history; its uri can be used again.
CREATE UNIQUE INDEX environments_live_uri ON environments (uri) WHERE status <> 'deleted';

CREATE TABLE operations (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id BIGINT NOT NULL,
    target_name TEXT NOT NULL,
    target_key TEXT NOT NULL,
    mutating BIGINT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    params TEXT NOT NULL DEFAULT '{}',
    retry_of BIGINT REFERENCES operations (id),
    attempt BIGINT NOT NULL DEFAULT 0,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX operations_status ON operations (status, id);
CREATE INDEX operations_target ON operations (target_key, status);

CREATE TABLE tasks (
    id BIGSERIAL PRIMARY KEY,
    operation_id BIGINT NOT NULL REFERENCES operations (id),
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT NOT NULL DEFAULT 'null',
    error TEXT,
    started_at BIGINT,
    finished_at BIGINT,
    UNIQUE (operation_id, seq)
);

CREATE TABLE task_logs (
    id BIGSERIAL PRIMARY KEY,
    operation_id BIGINT NOT NULL REFERENCES operations (id),
    task_seq BIGINT,
    ts BIGINT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX task_logs_operation ON task_logs (operation_id, id);
-- Logs are evidence: once written they are never changed.
CREATE FUNCTION task_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'task logs are append-only';
END;
$$;
CREATE TRIGGER task_logs_no_change BEFORE UPDATE OR DELETE ON task_logs
FOR EACH ROW EXECUTE FUNCTION task_logs_append_only();

CREATE TABLE backups (
    id BIGSERIAL PRIMARY KEY,
    environment_id BIGINT NOT NULL REFERENCES environments (id),
    path TEXT NOT NULL,
    size BIGINT,
    sha256 TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX backups_environment ON backups (environment_id, created_at);

CREATE TABLE api_tokens (
    id BIGSERIAL PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    -- SHA-256 of the token; the token itself is shown once and never stored.
    token_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
