//! The dependency floor (RELIABILITY.md §0.4): every crate named in
//! `.ci/advisories.toml` is locked at or above its patched version. An
//! offline stand-in for `cargo audit`, which needs the RustSec DB from
//! GitHub; see docs/hardening.md.

use std::path::Path;

fn version(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// Every locked version of `name`.
fn locked(lock: &toml::Table, name: &str) -> Vec<String> {
    lock["package"]
        .as_array()
        .expect("Cargo.lock has packages")
        .iter()
        .filter(|p| p["name"].as_str() == Some(name))
        .map(|p| p["version"].as_str().unwrap().to_owned())
        .collect()
}

fn floors() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(".ci/advisories.toml")).unwrap();
    let table: toml::Table = text.parse().expect("advisories.toml parses");
    table["advisory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["crate"].as_str().unwrap().to_owned(),
                a["floor"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn below_floor(lock: &toml::Table) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, floor) in floors() {
        let versions = locked(lock, &name);
        if versions.is_empty() {
            problems.push(format!(
                "{name}: not in Cargo.lock (stale advisories.toml?)"
            ));
        }
        for v in versions {
            if version(&v) < version(&floor) {
                problems.push(format!("{name} {v} is below the floor {floor}"));
            }
        }
    }
    problems
}

#[test]
fn every_locked_crate_is_at_or_above_its_advisory_floor() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock: toml::Table = std::fs::read_to_string(root.join("Cargo.lock"))
        .unwrap()
        .parse()
        .expect("Cargo.lock parses");
    let problems = below_floor(&lock);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_lock_below_the_floor_is_caught() {
    let lock: toml::Table = r#"
        [[package]]
        name = "h2"
        version = "0.4.16"
        [[package]]
        name = "rustls"
        version = "0.23.44"
    "#
    .parse()
    .unwrap();
    let problems = below_floor(&lock).join("\n");
    assert!(
        problems.contains("h2 0.4.16 is below the floor 0.4.17"),
        "{problems}"
    );
    assert!(problems.contains("rustls 0.23.44"), "{problems}");
    assert!(problems.contains("http: not in Cargo.lock"), "{problems}");
}
