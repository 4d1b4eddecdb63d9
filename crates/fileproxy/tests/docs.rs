//! The configuration reference is generated from the config types: every key of
//! `Config` (walked through the structs' fields, with their doc comments read from
//! the source by `syn`) with its default (`fileproxy::config::default_keys`), its TOML
//! type, its environment variable and whether `SIGHUP` reloads it.
//!
//! Two places hold the generated text: `docs/configuration.md` (the full reference)
//! and the key tables of `README.md` (between the `generated config tables` markers).
//! The test fails when either is stale; `FILEPROXY_BLESS=1 cargo test -p fileproxy
//! --test docs` rewrites both.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const README_BEGIN: &str =
    "<!-- BEGIN generated config tables: FILEPROXY_BLESS=1 cargo test -p fileproxy --test docs -->";
const README_END: &str = "<!-- END generated config tables -->";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo_root() -> PathBuf {
    crate_dir().join("../..")
}

/// One field of a config struct.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    /// The type as written (`Vec<String>`), and its last path segment (`Vec`) for lookup.
    ty: String,
    ty_ident: String,
    doc: String,
}

/// One config struct: its doc comment and named fields.
#[derive(Debug, Clone)]
struct Struct {
    doc: String,
    fields: Vec<Field>,
}

fn doc_of(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for a in attrs {
        if !a.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &a.meta {
            if let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
            {
                lines.push(s.value().trim().to_string());
            }
        }
    }
    lines.join(" ").trim().to_string()
}

fn type_text(ty: &syn::Type) -> (String, String) {
    match ty {
        syn::Type::Path(p) => {
            let Some(last) = p.path.segments.last() else {
                return ("?".into(), "?".into());
            };
            let ident = last.ident.to_string();
            let args = match &last.arguments {
                syn::PathArguments::AngleBracketed(a) => a
                    .args
                    .iter()
                    .filter_map(|g| match g {
                        syn::GenericArgument::Type(t) => Some(type_text(t).0),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            };
            let text = if args.is_empty() {
                ident.clone()
            } else {
                format!("{ident}<{}>", args.join(", "))
            };
            (text, ident)
        }
        _ => ("?".into(), "?".into()),
    }
}

fn collect_structs(file: &syn::File, out: &mut HashMap<String, Struct>) {
    fn walk(items: &[syn::Item], out: &mut HashMap<String, Struct>) {
        for item in items {
            match item {
                syn::Item::Struct(s) => {
                    let syn::Fields::Named(named) = &s.fields else {
                        continue;
                    };
                    let fields = named
                        .named
                        .iter()
                        .filter_map(|f| {
                            let name = f.ident.as_ref()?.to_string();
                            let (ty, ty_ident) = type_text(&f.ty);
                            Some(Field {
                                name,
                                ty,
                                ty_ident,
                                doc: doc_of(&f.attrs),
                            })
                        })
                        .collect();
                    // The first definition wins: config.rs is read first.
                    out.entry(s.ident.to_string()).or_insert(Struct {
                        doc: doc_of(&s.attrs),
                        fields,
                    });
                }
                syn::Item::Mod(m) => {
                    if let Some((_, items)) = &m.content {
                        walk(items, out);
                    }
                }
                _ => {}
            }
        }
    }
    walk(&file.items, out);
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every struct of the crate's source, config.rs first.
fn structs() -> HashMap<String, Struct> {
    let src = crate_dir().join("src");
    let mut files = vec![src.join("config.rs")];
    let mut rest = Vec::new();
    rust_files(&src, &mut rest);
    files.extend(rest.into_iter().filter(|p| !p.ends_with("config.rs")));
    let mut out = HashMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        collect_structs(&parsed, &mut out);
    }
    out
}

/// One documented key.
#[derive(Debug, Clone)]
struct Key {
    key: String,
    ty: String,
    default: Option<String>,
    /// The field's doc, prefixed by its parent's for nested tables.
    doc: String,
}

/// A `[section]`: its heading doc and keys.
#[derive(Debug, Clone)]
struct Section {
    name: String,
    doc: String,
    keys: Vec<Key>,
}

fn toml_type(ty: &str) -> String {
    let inner = |t: &str| toml_type(t);
    if let Some(rest) = ty.strip_prefix("Vec<").and_then(|r| r.strip_suffix('>')) {
        return format!("array of {}s", inner(rest));
    }
    // An unset optional key is written as the empty string (its default shows `""`),
    // so its TOML type is the inner type's.
    if let Some(rest) = ty.strip_prefix("Option<").and_then(|r| r.strip_suffix('>')) {
        return inner(rest);
    }
    if let Some(rest) = ty
        .strip_prefix("BTreeMap<")
        .or_else(|| ty.strip_prefix("HashMap<"))
        .and_then(|r| r.strip_suffix('>'))
    {
        let value = rest.split_once(", ").map(|(_, v)| v).unwrap_or(rest);
        return format!("table of {}s", inner(value));
    }
    match ty {
        "String" | "PathBuf" | "SocketAddr" | "Secret" | "StoreUrl" | "OriginUrl" => "string",
        "bool" => "boolean",
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "integer",
        "f32" | "f64" => "float",
        _ => "string",
    }
    .to_string()
}

fn sections() -> Vec<Section> {
    let structs = structs();
    let defaults: BTreeMap<String, String> =
        fileproxy::config::default_keys().into_iter().collect();
    let root = structs.get("Config").expect("struct Config in config.rs");
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for section in &root.fields {
        let st = structs
            .get(&section.ty_ident)
            .unwrap_or_else(|| panic!("no struct {} for [{}]", section.ty_ident, section.name));
        let mut keys = Vec::new();
        walk_fields(&structs, &defaults, &section.name, "", st, &mut keys);
        seen.extend(keys.iter().map(|k| k.key.clone()));
        out.push(Section {
            name: section.name.clone(),
            doc: st.doc.clone(),
            keys,
        });
    }
    let undocumented: Vec<_> = defaults.keys().filter(|k| !seen.contains(k)).collect();
    assert!(
        undocumented.is_empty(),
        "keys with a default but no field found in the source: {undocumented:?}"
    );
    out
}

fn walk_fields(
    structs: &HashMap<String, Struct>,
    defaults: &BTreeMap<String, String>,
    prefix: &str,
    parent_doc: &str,
    st: &Struct,
    out: &mut Vec<Key>,
) {
    for f in &st.fields {
        let key = format!("{prefix}.{}", f.name);
        let nested = structs
            .get(&f.ty_ident)
            .filter(|_| defaults.keys().any(|k| k.starts_with(&format!("{key}."))));
        match nested {
            Some(inner) => walk_fields(structs, defaults, &key, &f.doc, inner, out),
            None => {
                assert!(!f.doc.is_empty(), "config key {key} has no doc comment");
                let doc = if parent_doc.is_empty() {
                    f.doc.clone()
                } else {
                    format!("{parent_doc} — {}", f.doc)
                };
                out.push(Key {
                    default: defaults.get(&key).cloned(),
                    key,
                    ty: toml_type(&f.ty),
                    doc,
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
}

fn env_name(key: &str) -> String {
    format!("FILEPROXY_{}", key.replace('.', "__").to_ascii_uppercase())
}

fn short_default(d: &Option<String>) -> String {
    match d {
        None => "(unset)".into(),
        Some(v) if v.chars().count() > 55 => {
            let cut: String = v.chars().take(55).collect();
            let cut = cut.rsplit_once(", ").map(|(a, _)| a).unwrap_or(&cut);
            format!("{cut},…")
        }
        Some(v) => v.clone(),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The README's key tables: one per section, key / default / meaning.
fn render_readme_tables(sections: &[Section]) -> String {
    let mut out = String::new();
    let mut sorted: Vec<&Section> = sections.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for s in sorted {
        out.push_str(&format!(
            "**`[{}]`**\n\n| key | default | meaning |\n|---|---|---|\n",
            s.name
        ));
        for k in &s.keys {
            out.push_str(&format!(
                "| `{}` | `{}` | {} |\n",
                k.key,
                cell(&short_default(&k.default)),
                cell(&k.doc)
            ));
        }
        out.push('\n');
    }
    out
}

/// docs/configuration.md in full.
fn render_reference(sections: &[Section]) -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from the config types by crates/fileproxy/tests/docs.rs; do not edit.\n     \
         Regenerate: FILEPROXY_BLESS=1 cargo test -p fileproxy --test docs -->\n\n\
         One TOML file, given as `fileproxy serve --config FILE` (no file: the quick start).\n\
         Check a file with `fileproxy check-config --config FILE`: it exits 1 naming every\n\
         unknown or mistyped key and every bad value. Unknown keys are errors.\n\n\
         **Environment.** Every key can be set by a variable `FILEPROXY_<SECTION>__<KEY>`\n\
         (nested tables: more `__`, e.g. `FILEPROXY_AUTH__PLAYLIST_LIMITS__BROWSERS='{ qq = 2 }'`),\n\
         which wins over the file. A string key takes the value verbatim\n\
         (`FILEPROXY_AUTH__SECRET=12345` is the string `12345`, `'\"abc\"'` keeps its quotes);\n\
         other keys parse it as their type (`true`, `42`, `[\"a\", \"b\"]`, `{ limit = 2, window_s = 60 }`).\n\
         Secrets (`auth.secret`, `auth.whitelist_api_key`, `auth.admin_token`,\n\
         `protect.js_whitelist_secret`, `traffic.api_key`, the password in `store.url`) belong\n\
         in the environment or a file only root can read; they never appear in logs or `/health`.\n\n\
         **Reload.** `SIGHUP` (`systemctl reload fileproxy`) re-reads the file: keys marked\n\
         *reload* take effect for requests that start afterwards; keys marked *restart*\n\
         keep their running value (the log names each one the file changed) until the\n\
         process is restarted. A file that does not load or validate changes nothing\n\
         (error logged, `fileproxy_config_reloads_total{result=\"failed\"}` counts it).\n\
         See [operations.md](operations.md).\n\n",
    );
    for s in sections {
        out.push_str(&format!("- [`[{0}]`](#{0})\n", s.name));
    }
    out.push('\n');
    for s in sections {
        out.push_str(&format!("## [{}]\n\n{}\n\n", s.name, section_intro(&s.doc)));
        out.push_str("| key | type | default | on SIGHUP | environment |\n|---|---|---|---|---|\n");
        for k in &s.keys {
            let reload = if fileproxy::reload::is_restart_only(&k.key) {
                "restart"
            } else {
                "reload"
            };
            out.push_str(&format!(
                "| [`{key}`](#{anchor}) | {ty} | `{default}` | {reload} | `{env}` |\n",
                key = k.key,
                anchor = k.key.replace('.', ""),
                ty = k.ty,
                default = cell(&short_default(&k.default)),
                env = env_name(&k.key),
            ));
        }
        out.push('\n');
        for k in &s.keys {
            out.push_str(&format!(
                "### `{}`\n\n{}\n\nDefault: `{}`.\n\n",
                k.key,
                k.doc,
                k.default.as_deref().unwrap_or("(unset)")
            ));
        }
    }
    out
}

/// A section struct's doc without its leading "`[name]`: ", capitalised.
fn section_intro(doc: &str) -> String {
    let rest = doc
        .strip_prefix("`[")
        .and_then(|r| r.split_once("]`: "))
        .map(|(_, r)| r)
        .unwrap_or(doc);
    let mut chars = rest.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn splice_readme(readme: &str, tables: &str) -> Option<String> {
    let (head, rest) = readme.split_once(README_BEGIN)?;
    let (_, tail) = rest.split_once(README_END)?;
    Some(format!(
        "{head}{README_BEGIN}\n\n{tables}{README_END}{tail}"
    ))
}

#[test]
fn configuration_reference_and_readme_tables_are_current() {
    let sections = sections();
    let reference = render_reference(&sections);
    let readme_path = repo_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let new_readme = splice_readme(&readme, &render_readme_tables(&sections))
        .expect("README.md lacks the generated config table markers");
    let ref_path = repo_root().join("docs/configuration.md");
    let current_ref = std::fs::read_to_string(&ref_path).unwrap_or_default();
    if std::env::var_os("FILEPROXY_BLESS").is_some() {
        std::fs::write(&ref_path, &reference).expect("write docs/configuration.md");
        std::fs::write(&readme_path, &new_readme).expect("write README.md");
        return;
    }
    assert!(
        current_ref == reference,
        "docs/configuration.md is stale: run FILEPROXY_BLESS=1 cargo test -p fileproxy --test docs"
    );
    assert!(
        readme == new_readme,
        "README.md's config tables are stale: run FILEPROXY_BLESS=1 cargo test -p fileproxy --test docs"
    );
}

#[test]
fn every_key_is_documented_with_its_default() {
    let sections = sections();
    let keys: Vec<&Key> = sections.iter().flat_map(|s| &s.keys).collect();
    for (k, v) in fileproxy::config::default_keys() {
        let found = keys
            .iter()
            .find(|d| d.key == k)
            .unwrap_or_else(|| panic!("{k} is not in the reference"));
        assert_eq!(found.default.as_deref(), Some(v.as_str()), "{k}");
    }
    // Spot checks of the walk: nested tables, prefixed docs, types.
    let limit = keys
        .iter()
        .find(|k| k.key == "auth.playlist_limits.mobile_browser.window_s")
        .expect("nested key");
    assert!(
        limit.doc.starts_with("Mobile browsers. — "),
        "{}",
        limit.doc
    );
    assert_eq!(limit.ty, "integer");
    let origins = keys.iter().find(|k| k.key == "cors.allow_origins").unwrap();
    assert_eq!(origins.ty, "array of strings");
}

#[test]
fn docs_name_no_other_repository() {
    // The contract lives in this repository; nothing points outside it.
    let mut files = vec![repo_root().join("README.md")];
    for e in std::fs::read_dir(repo_root().join("docs")).expect("docs/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for bad in ["../shared", "SPEC", "steering repo"] {
            assert!(!text.contains(bad), "{} mentions {bad}", f.display());
        }
    }
}
