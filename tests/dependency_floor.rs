//! The dependency floor (RELIABILITY.md §0.4): every crate named in
//! `.ci/advisories.toml` is locked at or above its floor, and Cargo.toml
//! requires at least that floor wherever it names the crate, so no
//! resolution can go below it. The RustSec advisories themselves are
//! checked by `cargo audit` in .ci/run (vendored DB in .ci/advisory-db).

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

/// The lowest version a requirement such as `"0.4.17"` or `"^1.7"` allows.
fn requirement_floor(req: &str) -> Vec<u64> {
    let v = version(req.trim_start_matches(['^', '=', '~', '>', ' ']));
    (0..3).map(|i| v.get(i).copied().unwrap_or(0)).collect()
}

/// Floored crates that Cargo.toml requires below their floor.
fn requirements_below_floor(manifest: &toml::Table) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, floor) in floors() {
        for section in ["dependencies", "dev-dependencies"] {
            let Some(dep) = manifest.get(section).and_then(|s| s.get(&name)) else {
                continue;
            };
            let req = dep
                .as_str()
                .or_else(|| dep.get("version").and_then(|v| v.as_str()))
                .unwrap_or("*");
            if requirement_floor(req) < version(&floor) {
                problems.push(format!(
                    "{section}.{name} = {req:?} allows versions below the floor {floor}"
                ));
            }
        }
    }
    problems
}

#[test]
fn cargo_toml_requires_every_floor_it_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let problems = requirements_below_floor(&manifest);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let loose: toml::Table = "[dev-dependencies]\nh2 = \"0.4\"\n".parse().unwrap();
    assert_eq!(
        requirements_below_floor(&loose),
        ["dev-dependencies.h2 = \"0.4\" allows versions below the floor 0.4.17"]
    );
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

/// Where cargo unpacked the registry's crates (`$CARGO_HOME`, else
/// `~/.cargo`), if it did.
fn registry_sources() -> Vec<std::path::PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry/src")) else {
        return Vec::new();
    };
    std::fs::read_dir(src)
        .map(|dirs| dirs.filter_map(|d| Some(d.ok()?.path())).collect())
        .unwrap_or_default()
}

/// `rust-version` in Cargo.toml is at least that of every locked crate
/// whose sources cargo unpacked (redis 1.8 needs 1.88): an older toolchain
/// that passes the package's own check would fail in a dependency.
#[test]
fn rust_version_is_at_least_every_locked_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    // "1.88" is "1.88.0".
    let version = |v: &str| {
        let mut parts = version(v);
        parts.resize(3, 0);
        parts
    };
    let ours = version(manifest["package"]["rust-version"].as_str().unwrap());
    let lock: toml::Table = std::fs::read_to_string(root.join("Cargo.lock"))
        .unwrap()
        .parse()
        .unwrap();
    let sources = registry_sources();
    let mut checked = 0;
    let mut newer = Vec::new();
    for p in lock["package"].as_array().unwrap() {
        let (name, v) = (p["name"].as_str().unwrap(), p["version"].as_str().unwrap());
        for dir in &sources {
            let Ok(text) = std::fs::read_to_string(dir.join(format!("{name}-{v}/Cargo.toml")))
            else {
                continue;
            };
            let Ok(theirs) = text.parse::<toml::Table>() else {
                continue;
            };
            checked += 1;
            if let Some(rv) = theirs["package"]
                .get("rust-version")
                .and_then(|r| r.as_str())
            {
                if version(rv) > ours {
                    newer.push(format!("{name} {v} needs {rv}"));
                }
            }
            break;
        }
    }
    assert!(newer.is_empty(), "rust-version is below: {newer:?}");
    if checked == 0 {
        eprintln!("no crate sources unpacked: nothing to compare");
    }
}
