//! The crate has no import cycles: the graph of its modules (one per file),
//! derived from the `use crate::…` and `super::…` paths in `src/`, is
//! acyclic. A cycle means two modules can only be understood, tested and
//! changed together; this test names it. (Folders may use each other both
//! ways through different files: `ops/admin.rs` reads the token's state,
//! and the token refresher counts its fetches in `ops/metrics.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path such as `pacing::budget`, from a file under `src/`.
fn module_of(file: &Path, src: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::a::b…` path in `text` (and `super::…`, resolved against
/// `module`), outside comments and unit tests, expanded over one level of
/// braces (`crate::{a, b::c}`), as module-path segments from the root.
fn crate_paths(text: &str, module: &str) -> Vec<Vec<String>> {
    let mut parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    parent.pop();
    let parent = parent.join("::");
    let mut paths = Vec::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some((at, prefix, base)) = next_path(rest, &parent) {
            let tail = &rest[at + prefix.len()..];
            let end = tail
                .find(|c: char| {
                    !(c.is_alphanumeric()
                        || c == '_'
                        || c == ':'
                        || c == '{'
                        || c == '}'
                        || c == ','
                        || c == ' ')
                })
                .unwrap_or(tail.len());
            let path = &tail[..end];
            if let Some((head, group)) = path.split_once('{') {
                let group = group.split('}').next().unwrap_or("");
                for item in group.split(',') {
                    paths.push(segments(&format!("{base}::{head}{}", item.trim())));
                }
            } else {
                paths.push(segments(&format!("{base}::{path}")));
            }
            rest = &tail[end..];
        }
    }
    paths
}

/// Where the next `crate::` or `super::` path starts in `code`, which of
/// the two it is, and the module it is relative to.
fn next_path<'a>(code: &str, parent: &'a str) -> Option<(usize, &'static str, &'a str)> {
    let starts = |p: &'static str| {
        code.match_indices(p)
            .find(|(at, _)| {
                !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
            })
            .map(|(at, _)| at)
    };
    match (starts("crate::"), starts("super::")) {
        (Some(c), Some(s)) if s < c => Some((s, "super::", parent)),
        (Some(c), _) => Some((c, "crate::", "")),
        (None, Some(s)) => Some((s, "super::", parent)),
        (None, None) => None,
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The longest known module that `path` starts with.
fn target(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// A cycle in `graph`, as the list of its nodes, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The module graph of the crate under `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f, src)).collect();
    let mut file_graph = BTreeMap::<String, BTreeSet<String>>::new();
    for file in &files {
        let from = module_of(file, src);
        // The crate root and the binary put the parts together; they are
        // not parts themselves.
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for path in crate_paths(&text, &from) {
            let Some(to) = target(&path, &modules) else {
                continue;
            };
            // A child naming its parent module (which declares and
            // re-exports it) is how Rust modules work, not a cycle.
            if to != from && !from.starts_with(&format!("{to}::")) {
                file_graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    file_graph
}

#[test]
fn the_modules_of_the_crate_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = graph(&src);
    assert!(
        modules["stack"].contains("layers::guard")
            && modules["pacing::pacer"].contains("pacing::budget"),
        "the graph was not derived: {modules:?}"
    );
    if let Some(cycle) = find_cycle(&modules) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn paths_are_read_from_use_lines_and_code() {
    let text = "use crate::pacing::{budget::Budget, Pacer};\n\
                // use crate::ignored::Thing;\n\
                use super::dialect::parse;\n\
                let x = crate::ops::metrics::Metrics::new();\n\
                #[cfg(test)]\n\
                use super::*;";
    assert_eq!(
        crate_paths(text, "pacing::budget"),
        vec![
            segments("pacing::budget::Budget"),
            segments("pacing::Pacer"),
            segments("pacing::dialect::parse"),
            segments("ops::metrics::Metrics::new"),
        ]
    );
}

/// The diagram in `src/lib.rs` names every part: each folder of `src/` as
/// `name/`, and `src/` itself holds only the crate root, the binary, the
/// stack, the error type and the body type.
#[test]
fn every_folder_is_in_the_diagram_and_the_root_holds_five_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut root_files = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            assert!(
                lib.contains(&format!("//!  {name}/")) || lib.contains(&format!("─ {name}/")),
                "src/{name}/ is not a box of the diagram in src/lib.rs"
            );
        } else {
            root_files.push(name);
        }
    }
    root_files.sort();
    assert_eq!(
        root_files,
        ["body.rs", "error.rs", "lib.rs", "main.rs", "stack.rs"]
    );
}
