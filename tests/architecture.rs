//! The architecture, checked: imports between the modules of `src/` only point down the
//! layers of ARCHITECTURE.md, no files import each other in a loop, and no source file grows
//! past 1,000 lines. Cheap (it reads `use crate::…` and `super::…` paths as text), so it runs
//! with every `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first. A module may import only modules of layers below its own; modules
/// of one layer do not import each other. Keep in step with ARCHITECTURE.md.
const LAYERS: &[&[&str]] = &[
    &["main", "lib"],
    &["cli"],
    &["runtime"],
    &["config"],
    &["proxy"],
    &["server"],
    &["failover"],
    &["status"],
    &["replication"],
    &["objects"],
    &["settings"],
    &["log"],
    &["gate", "store"],
    &["types"],
];

/// Imports allowed to point up, each with why. At most five.
const ALLOWED_UPWARD: &[(&str, &str, &str)] = &[];

/// Longest source file, in lines. Test tables are exempt: they are long by nature.
const MAX_LINES: usize = 1000;
const LONG_TABLES: &[&str] = &["src/gate/tests.rs"];

#[test]
fn imports_only_point_down() {
    let files = sources(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    let violations = check_layers(&files);
    assert!(
        violations.is_empty(),
        "imports that do not point down the layers (see ARCHITECTURE.md):\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn no_files_import_each_other_in_a_loop() {
    let files = sources(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    let cycles = cycles(&files);
    assert!(
        cycles.is_empty(),
        "import cycles:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn no_source_file_is_over_a_thousand_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    for dir in ["src", "benches", "tests/common"] {
        for (path, text) in read_tree(&root.join(dir)) {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let lines = text.lines().count();
            if lines > MAX_LINES && !LONG_TABLES.contains(&rel.as_str()) {
                long.push(format!("{rel}: {lines} lines"));
            }
        }
    }
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

/// The checker itself catches what it is for: a store that imports the server, a loop
/// between two files, and a sideways import within a layer.
#[test]
fn the_checker_catches_a_wrong_import() {
    let files = vec![
        file("store/mod.rs", "use crate::server::pb;\n"),
        file("server/mod.rs", "use crate::store::Store;\n"),
        file("gate/mod.rs", "use crate::store::{self, Store};\n"),
        file("gate/a.rs", "use super::b::thing;\n"),
        file("gate/b.rs", "use crate::gate::a::other;\n"),
        file(
            "log/mod.rs",
            "fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::cli::run;\n}\n",
        ),
    ];
    let violations = check_layers(&files);
    assert_eq!(
        violations,
        vec![
            "src/gate/mod.rs imports store, which is in its own layer".to_string(),
            "src/store/mod.rs imports server, which is above it".to_string(),
        ]
    );
    let cycles = cycles(&files);
    assert_eq!(
        cycles,
        vec![
            "gate::a, gate::b import each other".to_string(),
            "server, store import each other".to_string(),
        ]
    );
}

/// One source file: its module path (`server::client`) and its text without comments and
/// without its inline test module.
struct Source {
    module: Vec<String>,
    is_mod_rs: bool,
    text: String,
}

fn file(rel: &str, text: &str) -> Source {
    let (module, is_mod_rs) = module_of(Path::new(rel));
    Source {
        module,
        is_mod_rs,
        text: strip(text),
    }
}

fn sources(src: &Path) -> Vec<Source> {
    read_tree(src)
        .into_iter()
        .filter(|(path, _)| path.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|(path, text)| {
            let rel = path.strip_prefix(src).expect("under src");
            file(&rel.display().to_string(), &text)
        })
        .collect()
}

fn read_tree(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(read_tree(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable source");
            out.push((path, text));
        }
    }
    out.sort();
    out
}

/// `server/client.rs` → `["server", "client"]`; `server/mod.rs` → `["server"]`.
fn module_of(rel: &Path) -> (Vec<String>, bool) {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let is_mod_rs = parts.last().is_some_and(|p| p == "mod");
    if is_mod_rs {
        parts.pop();
    }
    (parts, is_mod_rs)
}

/// Drops line comments (doc comments mention modules freely) and everything from the
/// inline `#[cfg(test)] mod tests` on (tests may reach anywhere).
fn strip(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every path a file names through `crate::` or `super::`, resolved from the crate root,
/// with `{a, b::c}` groups expanded.
fn paths(source: &Source) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (anchor, base) in [
        ("crate::", Vec::new()),
        ("super::", {
            let mut m = source.module.clone();
            if !source.is_mod_rs || !m.is_empty() {
                m.pop();
            }
            m
        }),
    ] {
        let text = &source.text;
        let mut from = 0;
        while let Some(i) = text[from..].find(anchor) {
            let start = from + i;
            from = start + anchor.len();
            let before = text[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &text[from..];
            let end = path_end(rest);
            expand(&base, &rest[..end], &mut out);
        }
    }
    out
}

/// Where a path that starts `rest` ends: after its segments and any balanced `{…}` group.
fn path_end(rest: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => return i,
            _ => {}
        }
    }
    rest.len()
}

fn expand(prefix: &[String], path: &str, out: &mut Vec<Vec<String>>) {
    let path = path.trim();
    if let Some(open) = path.find('{') {
        let mut head = prefix.to_vec();
        head.extend(segments(&path[..open]));
        let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&head, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&head, &inner[start..], out);
    } else {
        let mut full = prefix.to_vec();
        full.extend(segments(path));
        if !full.is_empty() {
            out.push(full);
        }
    }
}

fn segments(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "self" && *s != "*")
        .map(str::to_string)
}

fn top(module: &[String]) -> &str {
    module.first().map_or("lib", String::as_str)
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn check_layers(files: &[Source]) -> Vec<String> {
    let mut violations = BTreeSet::new();
    for source in files {
        let from = top(&source.module);
        let Some(from_layer) = layer_of(from) else {
            violations.insert(format!(
                "src/{from}: a top-level module missing from LAYERS"
            ));
            continue;
        };
        for path in paths(source) {
            let to = path[0].as_str();
            if to == from || layer_of(to).is_none() {
                continue;
            }
            let to_layer = layer_of(to).unwrap_or(usize::MAX);
            let allowed = ALLOWED_UPWARD
                .iter()
                .any(|(f, t, _)| *f == source.module.join("::") && *t == to);
            if to_layer > from_layer || allowed {
                continue;
            }
            let file = display(source);
            violations.insert(if to_layer == from_layer {
                format!("{file} imports {to}, which is in its own layer")
            } else {
                format!("{file} imports {to}, which is above it")
            });
        }
    }
    violations.into_iter().collect()
}

fn display(source: &Source) -> String {
    let mut p = format!("src/{}", source.module.join("/"));
    p.push_str(if source.is_mod_rs { "/mod.rs" } else { ".rs" });
    p
}

/// Loops between files, each written `a, b import each other`. An edge to a module's own ancestor
/// (a child using what its `mod.rs` declares) is not counted: the parent is the facade.
fn cycles(files: &[Source]) -> Vec<String> {
    let known: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for source in files {
        let entry = edges.entry(source.module.clone()).or_default();
        for path in paths(source) {
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| known.contains(p));
            if let Some(t) = target {
                if t != source.module && !source.module.starts_with(&t) {
                    entry.insert(t);
                }
            }
        }
    }
    // Tarjan's strongly connected components: every component of more than one file is
    // a loop.
    struct Walk<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<Vec<String>, usize>,
        low: BTreeMap<Vec<String>, usize>,
        stack: Vec<Vec<String>>,
        found: Vec<String>,
    }
    impl Walk<'_> {
        fn visit(&mut self, v: &Vec<String>) {
            let i = self.index.len();
            self.index.insert(v.clone(), i);
            self.low.insert(v.clone(), i);
            self.stack.push(v.clone());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v.clone(), low);
                } else if self.stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v.clone(), low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut members = Vec::new();
                while let Some(w) = self.stack.pop() {
                    let done = &w == v;
                    members.push(w.join("::"));
                    if done {
                        break;
                    }
                }
                if members.len() > 1 {
                    members.sort();
                    self.found
                        .push(format!("{} import each other", members.join(", ")));
                }
            }
        }
    }
    let mut walk = Walk {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found.sort();
    walk.found
}
