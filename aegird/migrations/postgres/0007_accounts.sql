-- Web UI accounts. Passwords are stored as argon2id PHC strings; a session is stored as the
-- SHA-256 of its cookie value, with the CSRF token its forms carry. failed_logins and
-- last_failed_at slow down password guessing (kept here so every daemon sharing the store
-- sees them).
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    admin BIGINT NOT NULL DEFAULT 0,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    last_failed_at BIGINT,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT
);
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
