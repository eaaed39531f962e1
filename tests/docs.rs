//! The documentation agrees with the repository: every file or folder that
//! README.md and docs/*.md name exists, none of them points outside the
//! repository, and docs/testing.md has a row for every test file.
//!
//! Files move (the layout of `src/` changed once already); a page that
//! sends a reader to a file that is gone is worse than no page.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let mut files = vec![root().join("README.md"), root().join("deploy/README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (f, text)
        })
        .collect()
}

/// Repository paths named in `text`: words starting with one of the
/// top-level folders, up to the first character that cannot be in a path.
fn named_paths(text: &str) -> Vec<String> {
    const TOP: [&str; 7] = [
        "src/",
        "tests/",
        "benches/",
        "docs/",
        "deploy/",
        "examples/",
        ".ci/",
    ];
    let mut out = Vec::new();
    for (i, _) in text.char_indices() {
        let rest = &text[i..];
        let Some(top) = TOP.iter().find(|t| rest.starts_with(**t)) else {
            continue;
        };
        // Only at the start of a word: `src/` in `../src/` or `crate-src/`
        // is not ours.
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '/' || c == '.' || c == '-') {
            continue;
        }
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || "/_.-".contains(c)))
            .unwrap_or(rest.len());
        let path = rest[..len].trim_end_matches(['.', ',']);
        if path.len() > top.len() && !path.contains('*') {
            out.push(path.to_string());
        }
    }
    out
}

#[test]
fn every_path_the_docs_name_exists() {
    let mut missing = Vec::new();
    for (page, text) in pages() {
        // deploy/README.md names its files relative to deploy/.
        let base = page.parent().unwrap();
        for path in named_paths(&text) {
            if !root().join(&path).exists() && !base.join(&path).exists() {
                missing.push(format!(
                    "{} names {path}",
                    page.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "missing files:\n{}", missing.join("\n"));
}

#[test]
fn no_page_points_outside_the_repository() {
    for (page, text) in pages() {
        for needle in ["SPEC.md", "shared/SPEC", "RELIABILITY.md", "../shared"] {
            assert!(
                !text.contains(needle),
                "{} points outside the repository: {needle}",
                page.display()
            );
        }
    }
}

/// Test files: `tests/*.rs` and every file of a test folder except the
/// shared harness (`tests/support/`).
fn test_files() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root().join("tests")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root()).unwrap().display().to_string();
            if path.is_dir() {
                if rel != "tests/support" {
                    stack.push(path);
                }
            } else if rel.ends_with(".rs") {
                out.insert(rel);
            }
        }
    }
    out
}

#[test]
fn docs_testing_lists_every_test_file() {
    let table = std::fs::read_to_string(root().join("docs/testing.md")).unwrap();
    let listed: BTreeSet<String> = named_paths(&table).into_iter().collect();
    // A row may name a whole folder (`tests/sim/`).
    let unlisted: Vec<_> = test_files()
        .into_iter()
        .filter(|f| {
            !listed
                .iter()
                .any(|l| l == f || (l.ends_with('/') && f.starts_with(l.as_str())))
        })
        .collect();
    assert!(
        unlisted.is_empty(),
        "docs/testing.md has no row for: {unlisted:?}"
    );
}

#[test]
fn named_paths_finds_words_not_parts_of_words() {
    let found = named_paths("see `src/lib.rs`, tests/docs.rs. and ../src/x or foo-src/y");
    assert_eq!(found, ["src/lib.rs", "tests/docs.rs"]);
}
