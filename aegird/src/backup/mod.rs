//! The backup formats and policies, free of hosts and stores: the archive (write, read,
//! check, extract safely), the parallel load of a dump (lanes, rows), the URL rewrite a clone
//! applies to a dump, and retention.

pub mod archive;
pub mod lanes;
pub mod retention;
pub mod rewrite;
pub mod rows;
