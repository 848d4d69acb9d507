//! Command lines: `aegird` (daemon and store administration) and `aegir` (the API client).

pub mod aegir;
pub mod aegird;
mod http;
pub mod k3s;
mod table;

pub use http::{Client, ClientError};
