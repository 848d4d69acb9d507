//! End-to-end tests, in one binary so the workspace links one heavy test executable.

mod api;
mod backups;
mod browser;
mod daemon;
mod drupal;
mod engine;
mod failures;
mod import;
mod releases;
mod sites;
mod ssh;
mod store;
mod takeover;
mod web;
