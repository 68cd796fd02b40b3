//! The agent's layout stays what probe/src/lib.rs says: no module imports one that imports it back,
//! directly or through others, and the bottom layers (kernel, alert, metrics, units) import no other
//! module of the agent. Read from the sources, a file or folder per node, as the structure review
//! counted them.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Top-level module (file or folder) → the top-level modules it names through `crate::` or, from
/// inside a folder, `super::` up to the root. Test code (`#[cfg(test)]` modules) is left out.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() || path.extension().is_some_and(|e| e == "rs") {
            modules.insert(name);
        }
    }
    modules.remove("main");
    modules.remove("lib");
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut files = Vec::new();
        collect(&src.join(module), &mut files);
        collect(&src.join(format!("{module}.rs")), &mut files);
        let mut uses = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Test modules may reach anywhere (the detector test kit replays through flows).
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            for (i, _) in text.match_indices("crate::") {
                for target in named_modules(&text[i + "crate::".len()..]) {
                    if modules.contains(&target) && &target != module {
                        uses.insert(target);
                    }
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

fn collect(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            collect(&entry.unwrap().path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The first path segments after `crate::`: one name, or every name of a `{a::x, b}` group.
fn named_modules(rest: &str) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut out = Vec::new();
        let mut start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && !c.is_whitespace() => {
                    out.push(ident(&group[i..]));
                    start = false;
                }
                _ => {}
            }
        }
        out
    } else {
        vec![ident(rest)]
    }
}

/// A cycle through `from`, if any.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == from {
                let mut p = path.clone();
                p.push(from.to_string());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn the_agent_has_no_import_circle_and_its_bottom_layers_import_nothing_above() {
    let graph = import_graph(&tests::workspace_root().join("probe/src"));
    assert!(graph.len() >= 10, "read the modules: {graph:?}");
    assert!(graph["agent"].contains("kernel") && graph["pipeline"].contains("detect"), "the reader sees imports: {graph:?}");
    for module in graph.keys() {
        assert_eq!(cycle(&graph, module), None, "an import circle through {module}; the graph: {graph:#?}");
    }
    // The base imports nothing of the agent; the bottom layers only the base.
    let base = ["units", "owned_files"];
    for leaf in base {
        assert!(graph[leaf].is_empty(), "{leaf} imports {:?}; it must import only probe-common", graph[leaf]);
    }
    for layer in ["kernel", "alert", "metrics"] {
        let above: Vec<&String> = graph[layer].iter().filter(|m| !base.contains(&m.as_str())).collect();
        assert!(above.is_empty(), "{layer} imports {above:?}; it must import only probe-common and {base:?}");
    }
    for (module, uses) in &graph {
        // The tops: the command line, and the two commands that take `run`'s settings (the agent,
        // and replay, which is `run` offline).
        if !["cli", "agent", "replay"].contains(&module.as_str()) {
            assert!(!uses.contains("config"), "{module} imports config; settings flow down from the top");
        }
    }
}
