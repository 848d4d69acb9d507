//! The release's software bill of materials (CycloneDX 1.5 JSON): every crate compiled into
//! aegird and aegir, with its version, licence, package URL and crates.io checksum.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{cmd, time};

struct Crate {
    name: String,
    version: String,
    license: Option<String>,
    registry: bool,
}

pub fn write(root: &Path, path: &Path, version: &str, epoch: u64) -> Result<()> {
    let meta = cmd::output(
        Command::new("cargo")
            .args(["metadata", "--format-version", "1", "--locked"])
            .current_dir(root),
    )?;
    let meta: Value = serde_json::from_str(&meta).context("cargo metadata's JSON")?;
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let bom = document(&meta, &checksums(&lock)?, version, epoch)?;
    let mut bytes = serde_json::to_vec_pretty(&bom)?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// `(name, version) -> sha256` of every crates.io package in Cargo.lock.
fn checksums(lock: &str) -> Result<BTreeMap<(String, String), String>> {
    let lock: toml::Value = toml::from_str(lock).context("parsing Cargo.lock")?;
    let mut out = BTreeMap::new();
    for p in lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let field = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
        if let (Some(n), Some(v), Some(c)) = (field("name"), field("version"), field("checksum")) {
            out.insert((n, v), c);
        }
    }
    Ok(out)
}

fn document(
    meta: &Value,
    sums: &BTreeMap<(String, String), String>,
    version: &str,
    epoch: u64,
) -> Result<Value> {
    let mut crates = BTreeMap::new();
    let mut root_id = None;
    for p in meta["packages"]
        .as_array()
        .context("no packages in cargo metadata")?
    {
        let id = p["id"].as_str().unwrap_or_default().to_string();
        let name = p["name"].as_str().unwrap_or_default().to_string();
        if name == "aegird" && p["source"].is_null() {
            root_id = Some(id.clone());
        }
        crates.insert(
            id,
            Crate {
                name,
                version: p["version"].as_str().unwrap_or_default().to_string(),
                license: p["license"].as_str().map(str::to_string),
                registry: p["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("registry+")),
            },
        );
    }
    let root_id = root_id.context("the aegird package is not in cargo metadata")?;

    // What the binaries link: aegird and its normal dependencies, transitively (build scripts
    // and dev-dependencies run at build time only).
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"]
        .as_array()
        .context("no resolve graph")?
    {
        let id = node["id"].as_str().unwrap_or_default();
        let deps = node["deps"].as_array().into_iter().flatten();
        let normal = deps.filter(|d| {
            d["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null())
        });
        edges.insert(id, normal.filter_map(|d| d["pkg"].as_str()).collect());
    }
    let mut seen = BTreeSet::from([root_id.as_str()]);
    let mut queue = VecDeque::from([root_id.as_str()]);
    while let Some(id) = queue.pop_front() {
        for dep in edges.get(id).into_iter().flatten() {
            if seen.insert(dep) {
                queue.push_back(dep);
            }
        }
    }

    let purl = |c: &Crate| format!("pkg:cargo/{}@{}", c.name, c.version);
    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    let mut ordered: Vec<&Crate> = seen.iter().filter_map(|id| crates.get(*id)).collect();
    ordered.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    for id in &seen {
        let Some(c) = crates.get(*id) else { continue };
        let mut on: Vec<String> = edges
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|d| crates.get(*d))
            .map(purl)
            .collect();
        on.sort();
        dependencies.push(json!({ "ref": purl(c), "dependsOn": on }));
    }
    dependencies.sort_by(|a, b| a["ref"].as_str().cmp(&b["ref"].as_str()));
    for c in ordered {
        let mut component = json!({
            "type": "library",
            "bom-ref": purl(c),
            "name": c.name,
            "version": c.version,
            "purl": purl(c),
        });
        if let Some(license) = &c.license {
            component["licenses"] = json!([{ "expression": license }]);
        }
        if let Some(sum) = sums.get(&(c.name.clone(), c.version.clone())) {
            component["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
        }
        if !c.registry {
            // Our own crates: the application itself, not a third-party library.
            component["type"] = json!("application");
        }
        components.push(component);
    }

    // A serial number derived from the content: the same release gives the same document.
    let digest = Sha256::digest(serde_json::to_vec(&components)?);
    let hex = format!("{digest:x}");
    let serial = format!(
        "urn:uuid:{}-{}-5{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    );
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": time::Utc::from_epoch(epoch).rfc3339(),
            "tools": { "components": [{ "type": "application", "name": "cargo xtask dist" }] },
            "component": {
                "type": "application",
                "bom-ref": format!("pkg:cargo/aegird@{version}"),
                "name": "aegir",
                "version": version,
                "licenses": [{ "expression": "GPL-2.0-or-later" }],
            },
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs on the workspace itself: the crates aegird links are in, test-only ones are not.
    #[test]
    fn lists_what_the_binaries_link() {
        let root = crate::workspace_root();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bom.json");
        write(&root, &path, "1.2.3", 0).unwrap();
        let bom: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let names: Vec<&str> = bom["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        for linked in ["aegird", "aegir-web", "tokio", "sqlx", "zstd"] {
            assert!(names.contains(&linked), "{linked} missing from {names:?}");
        }
        for not_linked in ["xtask", "aegir-tests", "tempfile", "clap_mangen"] {
            assert!(!names.contains(&not_linked), "{not_linked} listed");
        }
        let tokio = bom["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "tokio")
            .unwrap();
        assert_eq!(tokio["hashes"][0]["alg"], "SHA-256");
        assert!(tokio["licenses"][0]["expression"]
            .as_str()
            .unwrap()
            .contains("MIT"));
        // Same input, same document.
        let again = dir.path().join("again.json");
        write(&root, &again, "1.2.3", 0).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }
}
