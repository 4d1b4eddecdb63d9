//! The crate's modules form a DAG (issue 9): no module reaches itself through `crate::`
//! or `super::` paths (uses, paths in code, intra-doc links), at the level of the
//! top modules (`access`, `pipeline`, …) and at the level of files
//! (`access::whitelist`, …). Unit-test modules are left out: a test may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file (`access/mod.rs` → `access`, `access/ua.rs` →
/// `access::ua`).
fn module_of(src: &Path, file: &Path) -> String {
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

/// The text of a file without its `#[cfg(test)] mod … { … }` blocks.
fn without_test_modules(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{') else { break };
        // A `#[cfg(test)] use …;` item has a `;` before any brace: skip just that line.
        if let Some(semi) = after.find(';').filter(|s| *s < open) {
            rest = &after[semi + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, ch) in after[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The module paths a file names after `crate::` (and `super::`, made absolute).
fn references(module: &str, text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
            .trim_end_matches(':')
            .to_string()
    };
    let mut refs = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        refs.insert(ident(&text[i + 7..]));
    }
    let parent = module.rsplit_once("::").map(|(p, _)| p);
    for (i, _) in text.match_indices("super::") {
        let tail = ident(&text[i + 7..]);
        refs.insert(match parent {
            Some(p) => format!("{p}::{tail}"),
            None => tail,
        });
    }
    refs
}

/// The longest known module that `path` starts with.
fn resolve<'a>(modules: &'a BTreeSet<String>, path: &str) -> Option<&'a String> {
    let mut p = path.to_string();
    loop {
        if let Some(m) = modules.get(&p) {
            return Some(m);
        }
        p = p.rsplit_once("::")?.0.to_string();
    }
}

/// A cycle in `graph`, if any (depth-first search with colours).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The dependency graph of the crate's modules; `top` folds files into top modules.
fn graph(top: bool) -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut texts = BTreeMap::new();
    for f in &files {
        let m = module_of(&src, f);
        if m == "lib" || m == "main" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        texts.insert(m, without_test_modules(&text));
    }
    let modules: BTreeSet<String> = texts.keys().cloned().collect();
    let fold = |m: &str| -> String {
        if top {
            m.split("::").next().unwrap_or(m).to_string()
        } else {
            m.to_string()
        }
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &texts {
        for r in references(m, text) {
            if let Some(target) = resolve(&modules, &r) {
                let (from, to) = (fold(m), fold(target));
                if from != to {
                    g.entry(from).or_default().insert(to);
                }
            }
        }
    }
    g
}

#[test]
fn top_modules_form_a_dag() {
    let g = graph(true);
    assert!(g.len() > 10, "the scan found the modules: {g:?}");
    if let Some(cycle) = find_cycle(&g) {
        panic!("module cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn files_form_a_dag() {
    let g = graph(false);
    if let Some(cycle) = find_cycle(&g) {
        panic!("module cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn the_scan_sees_a_cycle_when_there_is_one() {
    let mut g = graph(true);
    g.entry("config".into())
        .or_default()
        .insert("pipeline".into());
    assert!(find_cycle(&g).is_some(), "config → pipeline → … → config");
}
