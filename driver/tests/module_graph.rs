//! No module of `protocol` or `driver` depends, through others, on itself:
//! each module's `crate::` and `super::` paths (outside its tests and its
//! comments) name the modules it uses, and that graph has no circle. A
//! module's use of its own ancestors (what `mod.rs` or `lib.rs` define or
//! re-export) is not counted: Rust's nesting makes those edges both ways.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's module path (`sio::socket`; the crate's root is empty).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The paths after each `crate::` and `super::` in `code`'s lines that are
/// not comments, up to its tests.
fn paths(code: &str) -> Vec<(bool, Vec<String>)> {
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        if line.starts_with("//") {
            continue;
        }
        for (prefix, is_super) in [("crate::", false), ("super::", true)] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let before = rest[..at].chars().next_back();
                rest = &rest[at + prefix.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let segs: Vec<String> = rest
                    .split("::")
                    .map(|s| {
                        s.chars()
                            .take_while(|c| {
                                c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'
                            })
                            .collect::<String>()
                    })
                    .take_while(|s| !s.is_empty())
                    .collect();
                found.push((is_super, segs));
            }
        }
    }
    found
}

/// The circles of modules in the crate whose sources are in `src`.
fn circles(src: &Path) -> Vec<Vec<String>> {
    let mut list = Vec::new();
    files(src, &mut list);
    let mut code = BTreeMap::new();
    for f in &list {
        code.insert(
            module_of(src, f),
            std::fs::read_to_string(f).expect("readable"),
        );
    }
    let known: BTreeSet<Vec<String>> = code.keys().cloned().collect();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, text) in &code {
        let mut uses = BTreeSet::new();
        for (is_super, segs) in paths(text) {
            let mut full = if is_super {
                module[..module.len().saturating_sub(1)].to_vec()
            } else {
                Vec::new()
            };
            full.extend(segs);
            // The longest prefix that is a module of its own.
            let target = (1..=full.len())
                .rev()
                .map(|k| full[..k].to_vec())
                .find(|m| known.contains(m));
            if let Some(t) = target
                && t != *module
                && !module.starts_with(&t)
            {
                uses.insert(t);
            }
        }
        graph.insert(module.clone(), uses);
    }
    // A module is in a circle when it reaches itself.
    let mut found: Vec<Vec<String>> = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<String>> = graph[start].iter().cloned().collect();
        while let Some(m) = stack.pop() {
            if m == *start {
                let mut circle: Vec<String> = seen
                    .iter()
                    .filter(|n: &&Vec<String>| reaches(&graph, n, start))
                    .map(|n| n.join("::"))
                    .collect();
                circle.push(start.join("::"));
                circle.sort();
                if !found.contains(&circle) {
                    found.push(circle);
                }
                break;
            }
            if seen.insert(m.clone()) {
                stack.extend(graph.get(&m).into_iter().flatten().cloned());
            }
        }
    }
    found
}

/// Whether `from` reaches `to` in `graph`.
fn reaches(
    graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    from: &[String],
    to: &[String],
) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_vec()];
    while let Some(m) = stack.pop() {
        if m == to {
            return true;
        }
        if seen.insert(m.clone()) {
            stack.extend(graph.get(&m).into_iter().flatten().cloned());
        }
    }
    false
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

#[test]
fn no_module_of_the_core_or_the_driver_reaches_itself() {
    for name in ["protocol", "driver"] {
        let found = circles(&crate_src(name));
        assert!(found.is_empty(), "{name}: modules in a circle: {found:?}");
    }
}

#[test]
fn a_circle_is_found() {
    let dir = std::env::temp_dir().join(format!("chatwire-module-graph-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sio")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a;\nmod sio;\n").unwrap();
    std::fs::write(dir.join("a.rs"), "use crate::sio::socket::Socket;\n").unwrap();
    std::fs::write(dir.join("sio/mod.rs"), "mod socket;\nmod recovery;\n").unwrap();
    std::fs::write(
        dir.join("sio/socket.rs"),
        "// crate::a in a comment is no use\nuse super::recovery::Log;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sio/recovery.rs"),
        "use crate::sio::socket::Socket;\nuse crate::sio::Thing;\n#[cfg(test)]\nuse crate::a::X;\n",
    )
    .unwrap();
    let found = circles(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        vec![vec!["sio::recovery".to_owned(), "sio::socket".to_owned()]]
    );
}
