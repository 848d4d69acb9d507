//! Importing an existing Aegir 3 installation (read-only).

pub mod alias;
pub mod hostmaster;
pub mod php;

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
