//! Importing an existing Aegir 3 installation, read-only: `source` reads it, `plan` maps it
//! to aegird's records, `apply` writes them in one transaction and says what became of each.

pub mod alias;
mod apply;
pub mod hostmaster;
pub mod php;
pub mod plan;
pub mod source;

use std::path::Path;
use std::time::Instant;

use crate::model::{ImportOutcome, ImportReport, ImportSummary, Timestamp};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The Aegir root is not there or not readable.
    #[error("Aegir root {0}")]
    Root(String),
    /// No hostmaster database was given and none could be found under the root.
    #[error("{0}")]
    NoHostmaster(String),
    #[error(transparent)]
    Hostmaster(#[from] hostmaster::HostmasterError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Imports (or with `dry_run` plans the import of) the Aegir 3 installation at `root`, whose
/// hostmaster database is `hostmaster_db` or found from the root. Aegir 3 is only read.
pub async fn run(
    store: &Store,
    hostmaster_db: Option<&str>,
    root: &Path,
    dry_run: bool,
    now: Timestamp,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let src = source::gather(hostmaster_db, root).await?;
    let plan = plan::plan(&src, &|p| p.exists());
    let notes = plan.notes.clone();
    let items = apply::apply(store, &src.id, plan, dry_run, now).await?;
    let mut summary = ImportSummary::default();
    for i in &items {
        *match i.outcome {
            ImportOutcome::Adopted => &mut summary.adopted,
            ImportOutcome::Updated => &mut summary.updated,
            ImportOutcome::Unchanged => &mut summary.unchanged,
            ImportOutcome::Skipped => &mut summary.skipped,
            ImportOutcome::Failed => &mut summary.failed,
        } += 1;
    }
    Ok(ImportReport {
        source: src.id,
        dry_run,
        summary,
        notes,
        items,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// The Aegir 3 fixture (REFERENCE.md, `aegir3_fixture.sql`, `drush/`, `site_drushrc/`), read at
/// test time from `$AEGIR3_FIXTURE_DIR`, else `../shared/aegir3` beside the repository, else
/// this workplace's `/work/shared/aegir3`; with a trailing slash.
#[cfg(test)]
pub(crate) fn test_fixtures() -> String {
    let beside = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/aegir3");
    let found = std::env::var("AEGIR3_FIXTURE_DIR")
        .ok()
        .into_iter()
        .chain([beside.to_string(), "/work/shared/aegir3".to_string()])
        .find(|d| std::path::Path::new(d).join("drush").is_dir());
    match found {
        Some(dir) => format!("{dir}/"),
        None => panic!(
            "the Aegir 3 fixture is not at $AEGIR3_FIXTURE_DIR, {beside} or /work/shared/aegir3"
        ),
    }
}
