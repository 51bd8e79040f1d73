//! The crate's layering, checked: every `crate::X` path in a top-level
//! module of `src/` points to a module of a lower layer (the table in
//! `design/architecture.md`), so data flows down and no two modules import
//! each other. No source file exceeds the size a reader can hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module and its layer; a module may import only from
/// modules of a strictly lower layer.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("loom", 0),
    ("metrics", 1),
    ("time", 1),
    ("task", 2),
    ("keyed", 3),
    ("sched", 4),
    ("forkjoin", 5),
    ("scaling", 5),
    ("tenants", 5),
    ("control", 6),
    ("pool", 7),
    ("par", 7),
    ("pipeline", 8),
];

/// Files that only wire or test the layers: the crate root
/// and the loom models (which drive every layer).
const OUTSIDE: &[&str] = &["lib", "loom_tests"];

const MAX_LINES: usize = 650;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn top_module(src: &Path, file: &Path) -> String {
    let first = file.strip_prefix(src).unwrap().components().next().unwrap();
    let name = first.as_os_str().to_str().unwrap();
    name.strip_suffix(".rs").unwrap_or(name).to_string()
}

/// The `crate::X` names a file refers to (in `use` trees, paths and doc
/// links alike).
fn references(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(i, _)| {
            text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn imports_point_down_the_layers_and_files_stay_short() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    let mut long = Vec::new();
    for file in &all {
        let text = std::fs::read_to_string(file).unwrap();
        let lines = text.lines().count();
        if lines > MAX_LINES {
            long.push(format!("{} ({lines} lines)", file.display()));
        }
        let from = top_module(&src, file);
        if OUTSIDE.contains(&from.as_str()) {
            continue;
        }
        let Some(&from_layer) = layer.get(from.as_str()) else {
            wrong.push(format!("{}: module `{from}` has no layer", file.display()));
            continue;
        };
        for to in references(&text) {
            // Names re-exported at the crate root (`crate::Pool`) are not
            // modules; only module paths make arrows.
            match layer.get(to.as_str()) {
                Some(&to_layer) if to != from && to_layer >= from_layer => wrong.push(format!(
                    "{}: `{from}` (layer {from_layer}) refers to `{to}` (layer {to_layer})",
                    file.display()
                )),
                _ => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows against the layering:\n{}",
        wrong.join("\n")
    );
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
    // Every module on disk has a layer (a new folder must be placed).
    let mut tops: Vec<String> = all.iter().map(|f| top_module(&src, f)).collect();
    tops.sort();
    tops.dedup();
    for top in tops {
        assert!(
            OUTSIDE.contains(&top.as_str()) || layer.contains_key(top.as_str()),
            "`{top}` is missing from LAYERS"
        );
    }
}

#[test]
fn the_checker_sees_an_upward_arrow() {
    // The reference scan the layering test relies on.
    assert_eq!(
        references("use crate::sched::Registry; // [x](crate::Pool)"),
        ["sched", ""]
    );
}
