-- Web UI accounts. Passwords are stored as argon2id PHC strings; a session is stored as the
-- SHA-256 of its cookie value, with the CSRF token its forms carry. failed_logins and
-- last_failed_at slow down password guessing (kept here so every daemon sharing the store
-- sees them).
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    last_failed_at INTEGER,
    created_at INTEGER NOT NULL,
    last_login_at INTEGER
);
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
