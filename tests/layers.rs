//! The layer map in `src/lib.rs` is the rule for which module may use which: a top-level module
//! of `src/` uses only modules of lower layers. This test reads the map from the crate docs and
//! every `crate::<module>` path in the code (test modules excepted: tests may reach anywhere),
//! and fails on any use that goes sideways or up, and on any module the map does not place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `module -> layer`, from the table rows `//! | N | `a`, `b` | job |` of `src/lib.rs`.
fn layer_map() -> BTreeMap<String, u32> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut map = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Ok(layer) = cells[0].parse::<u32>() else {
            continue;
        };
        for name in cells[1].split(',') {
            let name = name.trim().trim_matches('`');
            assert!(
                map.insert(name.to_string(), layer).is_none(),
                "{name} is placed twice in the layer map"
            );
        }
    }
    assert!(map.len() > 5, "no layer map found in src/lib.rs");
    map
}

/// The library's top-level modules (the `pub mod` lines of `src/lib.rs`) and their files. The
/// binary's own modules (`main.rs`, `cli`) sit above every layer and are not checked.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut mods = BTreeMap::new();
    for line in lib.lines() {
        let Some(name) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        else {
            continue;
        };
        let dir = src().join(name);
        let mut files = Vec::new();
        if dir.is_dir() {
            collect_rs(&dir, &mut files);
        } else {
            files.push(src().join(format!("{name}.rs")));
        }
        mods.insert(name.to_string(), files);
    }
    mods
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its `#[cfg(test)]` module and without comments.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module names a file reaches through `crate::name` or `use crate::{name, ...}`.
fn uses_in(code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let head: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if known.contains(&head) {
                    found.insert(head);
                }
            }
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if known.contains(&head) {
                found.insert(head);
            }
        }
    }
    found
}

#[test]
fn every_module_uses_only_lower_layers() {
    let map = layer_map();
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    let unplaced: Vec<&String> = known.iter().filter(|m| !map.contains_key(*m)).collect();
    assert!(
        unplaced.is_empty(),
        "modules missing from the layer map in src/lib.rs: {unplaced:?}"
    );
    let stale: Vec<&String> = map.keys().filter(|m| !known.contains(*m)).collect();
    assert!(
        stale.is_empty(),
        "the layer map names modules that do not exist: {stale:?}"
    );
    let mut wrong = Vec::new();
    for (module, files) in &mods {
        for file in files {
            for used in uses_in(&code_of(file), &known) {
                if used != *module && map[&used] >= map[module] {
                    wrong.push(format!(
                        "{} (layer {}) uses {used} (layer {})",
                        file.strip_prefix(src()).unwrap().display(),
                        map[module],
                        map[&used]
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "uses against the layer map:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_a_use_that_goes_up() {
    // The scanner itself: a path and a use group both count, comments do not.
    let known: BTreeSet<String> = ["flow", "record", "smtp"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let code = "use crate::{record::Side, smtp};\nfn f() { crate::flow::x(); }\n";
    let found = uses_in(code, &known);
    assert_eq!(found, known);
    let commented = code_of_text("// use crate::smtp;\nuse crate::record::Side;\n");
    assert_eq!(
        uses_in(&commented, &known),
        ["record".to_string()].into_iter().collect()
    );
}

fn code_of_text(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.rs");
    std::fs::write(&path, text).unwrap();
    code_of(&path)
}
