//! The module graph of a crate, read from its sources, and the import cycles in it: each
//! crate's architecture test asserts there are none, so dependencies keep pointing one way.
//!
//! A module is a source file (`a/b.rs` or `a/b/mod.rs` is `a::b`). Module `m` depends on
//! module `n` when `m` names a path through `n` (`crate::…`, `super::…`, `self::…`, a
//! child's name in a `use`), outside `#[cfg(test)]` items and comments. A child module that
//! only re-exports is still an edge from its parent. `tests` modules are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside its crate, e.g. `["raft", "node"]`; the crate root is empty.
pub type ModulePath = Vec<String>;

/// Every module of the crate rooted at `src` and the modules each one depends on.
pub fn module_graph(src: &Path) -> std::io::Result<BTreeMap<ModulePath, BTreeSet<ModulePath>>> {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files)?;
    let mut graph = BTreeMap::new();
    for (module, file) in &files {
        if module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(file)?;
        let code = without_tests_and_comments(&text);
        let mut deps = BTreeSet::new();
        for path in referenced_paths(&code) {
            if let Some(target) = resolve(module, &path, &files)
                && &target != module
                && !target.is_empty()
            {
                deps.insert(target);
            }
        }
        graph.insert(module.clone(), deps);
    }
    Ok(graph)
}

/// The groups of modules that import each other, directly or in a circle (strongly connected
/// components of more than one module), each as `a::b` names, sorted.
pub fn import_cycles(src: &Path) -> std::io::Result<Vec<Vec<String>>> {
    let graph = module_graph(src)?;
    Ok(strongly_connected(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut names: Vec<String> = c.iter().map(display).collect();
            names.sort();
            names
        })
        .collect())
}

/// The architecture test of the crate at `manifest_dir` (its `CARGO_MANIFEST_DIR`): fails,
/// naming them, when modules under `src/` import each other.
#[expect(
    clippy::panic,
    reason = "test support: a cycle or an unreadable source tree fails the calling test"
)]
pub fn assert_no_import_cycles(manifest_dir: &str) {
    let src = Path::new(manifest_dir).join("src");
    match import_cycles(&src) {
        Ok(cycles) if cycles.is_empty() => {}
        Ok(cycles) => panic!(
            "modules that import each other in {}: {cycles:?}",
            src.display()
        ),
        Err(e) => panic!("cannot read the sources in {}: {e}", src.display()),
    }
}

fn display(m: &ModulePath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn collect(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<ModulePath, PathBuf>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path).with_extension("");
        let mut parts: ModulePath = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
            parts.clear();
        }
        out.insert(parts, path);
    }
    Ok(())
}

/// The code without comments, string literals, and items under `#[cfg(test)]`.
fn without_tests_and_comments(text: &str) -> String {
    let stripped = strip_comments_and_strings(text);
    let mut out = String::with_capacity(stripped.len());
    let mut rest = stripped.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = skip_item(&rest[at + "#[cfg(test)]".len()..]);
    }
    out.push_str(rest);
    out
}

/// Skip one item: up to its `;` or its balanced `{ … }`, whichever comes first.
fn skip_item(text: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            ';' if depth == 0 => return &text[i + 1..],
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &text[i + 1..];
                }
            }
            _ => {}
        }
    }
    ""
}

fn strip_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            // A raw string: r"…", r#"…"#, r##"…"##.
            b'r' if matches!(b.get(i + 1), Some(b'#' | b'"'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                let open = i + 1 + hashes;
                if b.get(open) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                i = open + 1;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A char literal such as '{' (lifetimes like 'a are left alone).
            b'\'' if b.get(i + 2) == Some(&b'\'') => {
                i += 3;
            }
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            _ => {
                let start = i;
                i += 1;
                while i < b.len() && !matches!(b[i], b'/' | b'"' | b'\'' | b'r') {
                    i += 1;
                }
                out.push_str(&text[start..i]);
            }
        }
    }
    out
}

/// Every path the code names: the trees of `use` declarations expanded
/// (`use a::{b, c::d}` → `a::b`, `a::c::d`), and `x::y::z` paths elsewhere.
fn referenced_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let tail = &rest[at + 3..];
        let end = tail.find(';').unwrap_or(tail.len());
        expand_use("", &tail[..end], &mut paths);
        rest = &tail[end..];
    }
    let tokens: Vec<&str> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.contains("::"))
        .collect();
    for t in tokens {
        let parts: Vec<String> = t
            .split("::")
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if parts.len() > 1 {
            paths.push(parts);
        }
    }
    paths
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(word).map(|i| i + from) {
        let before = i.checked_sub(1).map(|j| b[j]);
        let after = b.get(i + word.len()).copied();
        let boundary = |c: Option<u8>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == b'_'));
        if boundary(before) && after.is_some_and(|c| c.is_ascii_whitespace()) {
            return Some(i);
        }
        from = i + word.len();
    }
    None
}

fn expand_use(prefix: &str, tree: &str, out: &mut Vec<Vec<String>>) {
    // `x as y` → `x@y` before the spaces go, so a rename is cut off and names stay whole.
    let words: Vec<&str> = tree.split_whitespace().collect();
    let tree = words.join(" ").replace(" as ", "@").replace(' ', "");
    if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let mut depth = 0usize;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    expand_use(prefix, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use(prefix, &inner[start..], out);
        return;
    }
    if let Some(i) = tree.find("::{") {
        expand_use(&format!("{prefix}{}::", &tree[..i]), &tree[i + 2..], out);
        return;
    }
    let path = format!("{prefix}{}", tree.split('@').next().unwrap_or(""));
    let parts: Vec<String> = path
        .split("::")
        .filter(|p| !p.is_empty() && *p != "*")
        .map(str::to_owned)
        .collect();
    if !parts.is_empty() {
        out.push(parts);
    }
}

/// The module a path names, as the longest module prefix of its resolved form: `crate::a::b`
/// from the root, `super::…`/`self::…` relative to `from`, and a bare first segment that is a
/// child module of `from` (`use child::Item;`).
fn resolve(
    from: &ModulePath,
    path: &[String],
    files: &BTreeMap<ModulePath, PathBuf>,
) -> Option<ModulePath> {
    let mut base: ModulePath = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("self") => from.clone(),
        Some("super") => from[..from.len().saturating_sub(1)].to_vec(),
        Some(first) => {
            let mut child = from.clone();
            child.push(first.to_owned());
            if !files.contains_key(&child) {
                return None;
            }
            from.clone()
        }
        None => return None,
    };
    let mut rest = match path.first().map(String::as_str) {
        Some("crate" | "self" | "super") => &path[1..],
        _ => path,
    };
    while rest.first().is_some_and(|p| p == "super") {
        base.pop();
        rest = &rest[1..];
    }
    let mut full = base;
    full.extend(rest.iter().cloned());
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|prefix| files.contains_key(prefix))
}

/// Tarjan's strongly connected components.
fn strongly_connected(graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Vec<Vec<ModulePath>> {
    struct State<'g> {
        graph: &'g BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        index: BTreeMap<&'g ModulePath, usize>,
        low: BTreeMap<&'g ModulePath, usize>,
        stack: Vec<&'g ModulePath>,
        on_stack: BTreeSet<&'g ModulePath>,
        next: usize,
        out: Vec<Vec<ModulePath>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g ModulePath) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let Some((w, _)) = graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway crate source tree: `files` as (path under src, contents).
    fn tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("modules-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, text) in files {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        root
    }

    #[test]
    fn two_modules_that_use_each_other_are_a_cycle() {
        let src = tree(
            "pair",
            &[
                ("lib.rs", "mod a;\nmod b;\n"),
                ("a.rs", "use crate::b::B;\npub struct A;\n"),
                ("b.rs", "use crate::{a::A, c};\npub struct B;\n"),
                ("c.rs", "pub struct C;\n"),
            ],
        );
        assert_eq!(import_cycles(&src).unwrap(), vec![vec!["a", "b"]]);
        std::fs::remove_dir_all(src).unwrap();
    }

    #[test]
    fn a_parent_and_a_child_that_use_each_other_are_a_cycle_through_super() {
        let src = tree(
            "parent",
            &[
                ("lib.rs", "pub mod store;\n"),
                (
                    "store/mod.rs",
                    "mod log;\npub use log::Log;\npub struct Db;\n",
                ),
                ("store/log.rs", "use super::Db;\npub struct Log(Db);\n"),
            ],
        );
        assert_eq!(
            import_cycles(&src).unwrap(),
            vec![vec!["store", "store::log"]]
        );
        std::fs::remove_dir_all(src).unwrap();
    }

    #[test]
    fn paths_in_comments_strings_and_tests_do_not_count() {
        let src = tree(
            "ignored",
            &[
                ("lib.rs", "mod a;\nmod b;\n"),
                ("a.rs", "use crate::b::B;\npub struct A;\n"),
                (
                    "b.rs",
                    concat!(
                        "// crate::a::A\n",
                        "pub struct B;\n",
                        "const S: &str = \"crate::a::A\";\n",
                        "const R: &str = r#\"crate::a::{A}\"#;\n",
                        "#[cfg(test)]\nmod tests { use crate::a::A; }\n",
                    ),
                ),
            ],
        );
        assert!(import_cycles(&src).unwrap().is_empty());
        let graph = module_graph(&src).unwrap();
        assert_eq!(graph[&vec!["a".to_string()]].len(), 1);
        std::fs::remove_dir_all(src).unwrap();
    }

    #[test]
    fn a_rename_and_a_deeper_path_resolve_to_the_module() {
        let src = tree(
            "rename",
            &[
                ("lib.rs", "mod raft;\nmod base;\n"),
                ("raft/mod.rs", "mod node;\n"),
                (
                    "raft/node.rs",
                    "use crate::base as b;\nfn f() { crate::base::inner::g(); }\n",
                ),
                ("base/mod.rs", "pub mod inner;\n"),
                ("base/inner.rs", "pub fn g() {}\n"),
            ],
        );
        let graph = module_graph(&src).unwrap();
        let deps: Vec<String> = graph[&vec!["raft".to_string(), "node".to_string()]]
            .iter()
            .map(|m| m.join("::"))
            .collect();
        assert_eq!(deps, vec!["base", "base::inner"]);
        std::fs::remove_dir_all(src).unwrap();
    }
}
