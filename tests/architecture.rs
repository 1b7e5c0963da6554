//! The shape of the code, checked: no import cycle between any two modules of a
//! crate, dependencies that point one way between the crates (service → core; the
//! core knows no actors, AMQP or HTTP server), and no mock-provider code in the
//! `keyrelay` binary.
//!
//! Modules are files. An edge A → B is any path in A (a `use` or an expression)
//! that names B through `crate::`, `super::`, `self::` or a child module; it
//! points at the deepest module the path names, so `super::error::AmqpError`
//! depends on `error`, not on the parent that declares it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

type ModPath = Vec<String>;

/// One file module: where it is and which modules it declares.
struct FileModule {
    file: PathBuf,
    children: BTreeSet<String>,
}

/// Every file module of one crate, keyed by its path from the crate root.
struct CrateModules {
    modules: BTreeMap<ModPath, FileModule>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse(file: &Path) -> syn::File {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Follows `mod x;` declarations from the crate root file.
fn crate_modules(root: &Path) -> CrateModules {
    let mut modules = BTreeMap::new();
    let mut pending = vec![(ModPath::new(), root.to_path_buf())];
    while let Some((path, file)) = pending.pop() {
        let ast = parse(&file);
        let mut children = BTreeSet::new();
        for item in &ast.items {
            let syn::Item::Mod(m) = item else { continue };
            if m.content.is_some() {
                continue; // inline: part of this file's module
            }
            let name = m.ident.to_string();
            let child = child_file(&file, &name, path_attr(&m.attrs));
            let mut child_path = path.clone();
            child_path.push(name.clone());
            children.insert(name);
            pending.push((child_path, child));
        }
        modules.insert(path, FileModule { file, children });
    }
    CrateModules { modules }
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// Where `mod name;` in `parent` lives (the 2018 rules, plus `#[path]`).
fn child_file(parent: &Path, name: &str, path: Option<String>) -> PathBuf {
    let dir = parent.parent().expect("a file has a directory");
    if let Some(path) = path {
        return dir.join(path);
    }
    let stem = parent
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let base = if ["lib", "main", "mod"].contains(&stem) {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    let flat = base.join(format!("{name}.rs"));
    if flat.exists() {
        flat
    } else {
        base.join(name).join("mod.rs")
    }
}

/// A dependency found in a file, with the path that made it (for the report).
struct Edge {
    to: ModPath,
    via: String,
}

/// Collects the module paths a file names, tracking inline `mod` scopes.
struct PathCollector<'a> {
    krate: &'a CrateModules,
    scope: ModPath,
    edges: Vec<Edge>,
    /// First segments of every path (to find crates the file uses).
    roots: BTreeSet<String>,
}

impl PathCollector<'_> {
    fn record(&mut self, segments: &[String]) {
        if let Some(first) = segments.first() {
            self.roots.insert(first.clone());
        }
        if let Some(to) = self.resolve(segments) {
            self.edges.push(Edge {
                to,
                via: segments.join("::"),
            });
        }
    }

    /// The deepest file module `segments` names, if it names one of this crate.
    fn resolve(&self, segments: &[String]) -> Option<ModPath> {
        let mut at = self.scope.clone();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                at.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    at.pop()?;
                    rest = &rest[1..];
                }
            }
            Some(first) if self.children_of(&at).contains(first) => {}
            _ => return None,
        }
        for seg in rest {
            if !self.children_of(&at).contains(seg) {
                break;
            }
            at.push(seg.clone());
        }
        // An inline module belongs to the file that holds it.
        while !self.krate.modules.contains_key(&at) {
            at.pop()?;
        }
        Some(at)
    }

    fn children_of(&self, at: &ModPath) -> BTreeSet<String> {
        self.krate
            .modules
            .get(at)
            .map(|m| m.children.clone())
            .unwrap_or_default()
    }
}

fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => out.push([prefix.clone(), vec![n.ident.to_string()]].concat()),
        syn::UseTree::Rename(r) => out.push([prefix.clone(), vec![r.ident.to_string()]].concat()),
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| use_paths(t, prefix, out)),
    }
}

impl<'ast> Visit<'ast> for PathCollector<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.scope.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.scope.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        use_paths(&u.tree, &mut Vec::new(), &mut paths);
        paths.iter().for_each(|p| self.record(p));
    }

    /// Macro bodies are tokens, not syntax: paths in them (`metrics::counter!(
    /// crate::metrics::X)`, `tokio::select!`) are read as `a :: b :: c` runs.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let text = m
            .tokens
            .to_string()
            .replace(['(', ')', '[', ']', '{', '}', ',', ';'], " ");
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut i = 0;
        while i < words.len() {
            let mut path = vec![words[i].to_owned()];
            while words.get(i + 1) == Some(&"::") && i + 2 < words.len() {
                path.push(words[i + 2].to_owned());
                i += 2;
            }
            if path.len() > 1 && ["crate", "super", "self"].contains(&path[0].as_str()) {
                self.record(&path);
            }
            i += 1;
        }
        syn::visit::visit_macro(self, m);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.record(&segments);
        }
        syn::visit::visit_path(self, p);
    }
}

/// Every edge of a crate, by source module, and the roots each file names.
fn crate_graph(krate: &CrateModules) -> BTreeMap<ModPath, (Vec<Edge>, BTreeSet<String>)> {
    let mut graph = BTreeMap::new();
    for (path, module) in &krate.modules {
        let mut collector = PathCollector {
            krate,
            scope: path.clone(),
            edges: Vec::new(),
            roots: BTreeSet::new(),
        };
        collector.visit_file(&parse(&module.file));
        let edges = collector
            .edges
            .into_iter()
            .filter(|e| &e.to != path)
            .collect();
        graph.insert(path.clone(), (edges, collector.roots));
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<ModPath, (Vec<Edge>, BTreeSet<String>)>) -> Vec<Vec<ModPath>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<ModPath, (Vec<Edge>, BTreeSet<String>)>,
        index: BTreeMap<&'g ModPath, (usize, usize)>,
        stack: Vec<&'g ModPath>,
        on_stack: BTreeSet<&'g ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g ModPath) {
            let n = self.index.len();
            self.index.insert(v, (n, n));
            self.stack.push(v);
            self.on_stack.insert(v);
            for e in &self.graph[v].0 {
                let w = self
                    .graph
                    .get_key_value(&e.to)
                    .expect("edges point at modules")
                    .0;
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.index[w].1.min(self.index[v].1);
                    self.index.get_mut(v).expect("visited").1 = low;
                } else if self.on_stack.contains(w) {
                    let low = self.index[w].0.min(self.index[v].1);
                    self.index.get_mut(v).expect("visited").1 = low;
                }
            }
            if self.index[v].0 == self.index[v].1 {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

fn show(path: &ModPath) -> String {
    if path.is_empty() {
        "(root)".into()
    } else {
        path.join("::")
    }
}

/// The cycles of one crate, each with the edges that close it.
fn cycle_report(root: &str) -> String {
    let krate = crate_modules(&repo().join(root));
    let graph = crate_graph(&krate);
    let mut report = String::new();
    for component in cycles(&graph) {
        let members: BTreeSet<&ModPath> = component.iter().collect();
        report += &format!(
            "cycle in {root}: {}\n",
            component.iter().map(show).collect::<Vec<_>>().join(", ")
        );
        for from in &component {
            let mut seen = BTreeSet::new();
            for e in graph[from].0.iter().filter(|e| members.contains(&e.to)) {
                if seen.insert(&e.to) {
                    report += &format!("    {} -> {}   ({})\n", show(from), show(&e.to), e.via);
                }
            }
        }
    }
    report
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let report: String = ["src/core/lib.rs", "src/service/lib.rs", "src/mock/lib.rs"]
        .iter()
        .map(|r| cycle_report(r))
        .collect();
    assert!(
        report.is_empty(),
        "import cycles between modules:\n{report}"
    );
}

#[test]
fn the_core_knows_no_actors_amqp_http_server_or_service() {
    let krate = crate_modules(&repo().join("src/core/lib.rs"));
    let forbidden = ["actix", "actix_web", "lapin", "keyrelay", "keyrelay_mock"];
    let mut found = Vec::new();
    for (path, (_, roots)) in crate_graph(&krate) {
        for root in roots.iter().filter(|r| forbidden.contains(&r.as_str())) {
            found.push(format!(
                "{} names `{root}`",
                krate.modules[&path].file.display()
            ));
        }
    }
    // Test modules may use the mock (a dev-dependency); production code may not.
    found.retain(|f| !(f.contains("test") && f.ends_with("`keyrelay_mock`")));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_mock_provider_is_a_dev_dependency_only() {
    for manifest in ["Cargo.toml", "src/core/Cargo.toml"] {
        let text = std::fs::read_to_string(repo().join(manifest)).expect("manifest");
        let value: toml::Table = toml::from_str(&text).expect("manifest is TOML");
        let deps = value
            .get("dependencies")
            .and_then(|d| d.as_table())
            .expect("[dependencies]");
        assert!(
            !deps.contains_key("keyrelay-mock"),
            "{manifest} links the mock provider"
        );
        for banned in ["actix", "actix-web", "lapin"]
            .iter()
            .filter(|_| manifest.starts_with("src/core"))
        {
            assert!(
                !deps.contains_key(*banned),
                "keyrelay-core depends on {banned}"
            );
        }
    }
}

#[test]
fn the_keyrelay_binary_contains_no_mock_provider_code() {
    let binary = std::fs::read(env!("CARGO_BIN_EXE_keyrelay")).expect("the keyrelay binary");
    let contains = |needle: &[u8]| binary.windows(needle.len()).any(|w| w == needle);
    // Symbol names carry the crate name: the core's are there, the mock's are not.
    assert!(
        contains(b"keyrelay_core"),
        "the scan sees crate names in symbols"
    );
    assert!(
        !contains(b"keyrelay_mock"),
        "the keyrelay binary links keyrelay_mock"
    );
}
