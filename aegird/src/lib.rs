//! aegird: the Aegir hosting control plane as a library, wired by the `aegird` and `aegir` binaries.
//!
//! The modules follow the architecture's boundaries (see ARCHITECTURE.md): `model` holds the
//! domain types and edge validation, `store` is the only code that speaks SQL, `engine` runs
//! operations, `backend` reaches hosts, `app` is the application layer that the API and
//! the web UI call, `api` is HTTP (the JSON API), `web` the web UI's sessions and pages, `cli` is the `aegir` client, `daemon` wires a running
//! `aegird` together.

pub mod accounts;
pub mod api;
pub mod app;
pub mod apps;
pub mod backend;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod hex;
pub mod import;
pub mod model;
pub mod store;
pub mod web;

/// This build's version: `AEGIR_VERSION` when `cargo xtask dist` builds a release of a tag,
/// else the crate's own, so `--version`, the packages and the image all name the same one.
pub const VERSION: &str = match option_env!("AEGIR_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};
