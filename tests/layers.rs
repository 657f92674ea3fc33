//! The crate's layering, checked from the source: no import cycle between `src/` modules,
//! bottom modules import no stage, stages import no top module, and a stage imports another
//! stage only along the few edges listed in [`STAGE_EDGES`].
//!
//! Each file under `src/` (but `main.rs` and `lib.rs`) belongs to its top-level module
//! (`src/x.rs` or `src/x/…` → `x`); every `crate::y` path outside comments and string
//! literals is an edge `x → y`. Unit-test code (a `#[cfg(test)] mod` and everything after it
//! in a file, by the convention that tests sit at the bottom, and files that are
//! `#[cfg(test)]` modules) is left out: a test may build the whole service to test one stage,
//! as the integration tests do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Import nothing but each other (and only downward): types and services every stage uses.
const BOTTOM: &[&str] = &["core", "error", "envelope", "telemetry", "lograte", "backoff", "fault", "redact"];

/// The stage folders; `stage` (the stage trait) sits between them and the bottom.
const STAGES: &[&str] = &["consume", "decode", "enrich", "score", "rules", "publish", "drift"];

/// Stage → stage imports allowed: none. Where two stages meet, the shared part lives in
/// `core` (the Kafka settings, the record sink) or above both (`reload`).
const STAGE_EDGES: &[(&str, &str)] = &[];

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// `text` with comments, string and char literals blanked out (lengths kept).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: &[u8]| out.extend(from.iter().map(|&c| if c == b'\n' { c } else { b' ' }));
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            i + rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, i);
            loop {
                if j + 1 >= b.len() {
                    break b.len();
                } else if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break j;
                    }
                } else {
                    j += 1;
                }
            }
        } else if rest[0] == b'r' && (rest.starts_with(b"r\"") || rest.starts_with(b"r#")) && !ident_before(b, i) {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push(rest[0]);
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes)).into_bytes();
            let body = i + 2 + hashes;
            body + b[body..].windows(close.len()).position(|w| w == close.as_slice()).unwrap_or(b.len()) + close.len()
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), or else a lifetime (left as is).
            if rest.get(1) == Some(&b'\\') {
                i + 2 + rest[2..].iter().position(|&c| c == b'\'').unwrap_or(0) + 1
            } else {
                match std::str::from_utf8(&rest[1..rest.len().min(6)]).ok().or(Some("")).and_then(|s| s.chars().next())
                {
                    Some(c) if rest.get(1 + c.len_utf8()) == Some(&b'\'') => i + 2 + c.len_utf8(),
                    _ => {
                        out.push(rest[0]);
                        i += 1;
                        continue;
                    }
                }
            }
        } else {
            out.push(rest[0]);
            i += 1;
            continue;
        };
        let end = end.min(b.len());
        blank(&mut out, &b[i..end]);
        i = end;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// The non-test part of a file, and the names of `#[cfg(test)] mod name;` files it declares.
fn without_tests(code: &str) -> (String, Vec<String>) {
    let mut kept = String::new();
    let mut test_files = Vec::new();
    let mut lines = code.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            let next = lines.peek().map(|l| l.trim()).unwrap_or_default();
            if let Some(name) = next.strip_prefix("mod ").and_then(|m| m.strip_suffix(';')) {
                test_files.push(name.trim().to_string());
                lines.next();
                continue;
            }
            if next.starts_with("mod ") {
                break; // an inline test module: the rest of the file is tests
            }
        }
        kept.push_str(line);
        kept.push('\n');
    }
    (kept, test_files)
}

/// Top-level modules named by `crate::x` paths, including `crate::{x, y::z}` groups.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = code;
    while let Some(k) = rest.find("crate::") {
        let before = rest[..k].chars().next_back();
        rest = &rest[k + "crate::".len()..];
        if matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: identifiers at brace depth 0.
            let mut depth = 0;
            let mut at_item = true;
            for (n, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_item = true,
                    c if at_item && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        refs.insert(ident(&group[n..]));
                        at_item = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                refs.insert(name);
            }
        }
    }
    refs
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

/// Module → module → the files that make each edge, for the crate at `root`.
fn module_graph(root: &Path) -> Graph {
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut test_only: BTreeSet<PathBuf> = BTreeSet::new();
    let mut parsed = Vec::new();
    for path in &files {
        let (code, tests) = without_tests(&code_only(&std::fs::read_to_string(path).unwrap()));
        let dir = if path.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs") {
            path.parent().unwrap().to_path_buf()
        } else {
            path.with_extension("")
        };
        test_only.extend(tests.iter().map(|t| dir.join(t)));
        parsed.push((path.clone(), code));
    }
    let mut graph = Graph::new();
    for (path, code) in parsed {
        let rel = path.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "main"
            || top == "lib"
            || test_only.iter().any(|t| path.with_extension("") == *t || path.starts_with(t))
        {
            continue;
        }
        let edges = graph.entry(top.clone()).or_default();
        for r in crate_refs(&code) {
            if r != top {
                edges.entry(r).or_default().insert(rel.display().to_string());
            }
        }
    }
    graph
}

/// One cycle of the graph, as the modules along it (first repeated at the end), if any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(n: &str, g: &Graph, state: &mut BTreeMap<String, u8>, stack: &mut Vec<String>) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for next in g.get(n).into_iter().flat_map(|e| e.keys()) {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, g, state, stack) {
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
        if !state.contains_key(n) {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn describe(graph: &Graph, cycle: &[String]) -> String {
    cycle
        .windows(2)
        .map(|w| {
            let files: Vec<_> = graph[&w[0]][&w[1]].iter().cloned().collect();
            format!("  {} → {}  ({})", w[0], w[1], files.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn crate_graph() -> Graph {
    module_graph(Path::new(env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn src_modules_import_each_other_without_a_cycle() {
    let graph = crate_graph();
    assert!(graph.contains_key("core") && graph.contains_key("decode"), "the scan found the modules: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between src/ modules:\n{}", describe(&graph, &cycle));
    }
}

#[test]
fn bottom_modules_import_only_bottom_modules() {
    let graph = crate_graph();
    let mut wrong = Vec::new();
    for &m in BOTTOM {
        for (to, files) in graph.get(m).into_iter().flatten() {
            if !BOTTOM.contains(&to.as_str()) {
                wrong.push(format!("{m} → {to} ({})", files.iter().cloned().collect::<Vec<_>>().join(", ")));
            }
        }
    }
    assert!(wrong.is_empty(), "bottom modules must not import stages or top modules:\n  {}", wrong.join("\n  "));
}

#[test]
fn the_stage_trait_imports_only_bottom_modules() {
    let graph = crate_graph();
    let wrong: Vec<&String> =
        graph.get("stage").into_iter().flat_map(|e| e.keys()).filter(|to| !BOTTOM.contains(&to.as_str())).collect();
    assert!(wrong.is_empty(), "`stage` sits just above the bottom; it imports {wrong:?}");
}

#[test]
fn stages_import_no_top_module_and_no_other_stage_but_the_listed_edges() {
    let graph = crate_graph();
    let mut wrong = Vec::new();
    for &m in STAGES {
        for (to, files) in graph.get(m).into_iter().flatten() {
            let allowed = BOTTOM.contains(&to.as_str())
                || to == "stage"
                || (STAGES.contains(&to.as_str()) && STAGE_EDGES.contains(&(m, to.as_str())));
            if !allowed {
                wrong.push(format!("{m} → {to} ({})", files.iter().cloned().collect::<Vec<_>>().join(", ")));
            }
        }
    }
    assert!(wrong.is_empty(), "a stage imports bottom modules and `stage` only:\n  {}", wrong.join("\n  "));
}

#[test]
fn the_scanner_sees_through_comments_strings_groups_and_test_modules() {
    let code = code_only(
        "use crate::{a::X, b};\n// crate::c\nlet s = \"crate::d\"; let r = r#\"crate::e\"#; let c = '{'; \
         /* crate::f */ fn g<'a>(x: &'a crate::h::T) {}\n#[cfg(test)]\nmod tests {\n use crate::i;\n}\n",
    );
    let (code, _) = without_tests(&code);
    let refs: Vec<String> = crate_refs(&code).into_iter().collect();
    assert_eq!(refs, ["a", "b", "h"]);

    let mut g = Graph::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w")] {
        g.entry(a.into()).or_default().entry(b.into()).or_default().insert(format!("{a}.rs"));
    }
    assert_eq!(find_cycle(&g).unwrap(), ["x", "y", "z", "x"]);
    g.get_mut("z").unwrap().remove("x");
    assert_eq!(find_cycle(&g), None);
}
