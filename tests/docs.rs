//! The manual cannot drift from the code. README.md and the book in
//! docs/src are read as files (no network, nothing started) and:
//!
//! - every internal link resolves: pages, `#anchors` against the target
//!   page's headings as mdBook (and GitHub) make them, and repository files;
//!   every page is in SUMMARY.md;
//! - every TOML snippet is a config the service accepts: ```toml is merged
//!   into a minimal config and must pass `Config::parse`, the whole check
//!   `check` and `run` make; ```toml fragment (a snippet that names a
//!   deployment's files or placeholder values) is read by its first step,
//!   `Config::parse_shape` (syntax, unknown keys, value types);
//!   ```toml client is read as the client config of `login`/`token`;
//! - the configuration reference has a row for every key of the parser,
//!   and names no key it does not have;
//! - every ```sh run block runs, with the built binary as
//!   `nats-oidc-callout`, in a temporary directory per page holding a copy of
//!   config.example.toml, in page order.
//!
//! Failures name the file and line.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use nats_oidc_callout::config::Config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Markdown file of the manual, by its path from the repository root.
struct Page {
    rel: String,
    text: String,
}

/// README.md and every page under docs/src, in path order.
fn pages() -> Vec<Page> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md")];
    let mut book = Vec::new();
    walk(&root().join("docs/src"), &mut book);
    book.sort();
    files.extend(book);
    files
        .into_iter()
        .map(|path| Page {
            rel: path
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            text: std::fs::read_to_string(&path).unwrap(),
        })
        .collect()
}

/// A fenced code block: the line of its opening fence (1-based), its info
/// string (`toml`, `sh run`) and its text (without the indentation of a
/// block inside a list item).
struct Block {
    line: usize,
    info: String,
    body: String,
    indent: usize,
}

/// The words of an info string (`toml fragment`): mdBook splits it at
/// spaces and commas, GitHub takes the first word as the language.
fn flags(info: &str) -> Vec<&str> {
    info.split([' ', ',']).filter(|w| !w.is_empty()).collect()
}

/// The info string of a fence line (indented or not), or `None`.
fn fence(line: &str) -> Option<&str> {
    line.trim_start().strip_prefix("```")
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, fence(line)) {
            (None, Some(info)) => {
                open = Some(Block {
                    line: i + 1,
                    info: info.trim().to_string(),
                    body: String::new(),
                    indent: line.len() - line.trim_start().len(),
                })
            }
            (Some(_), Some(_)) => out.push(open.take().unwrap()),
            (Some(block), None) => {
                let cut = line.len() - line.trim_start().len();
                block.body.push_str(&line[cut.min(block.indent)..]);
                block.body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The text with every fenced block's lines blanked (line numbers kept).
fn prose(text: &str) -> String {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if fence(line).is_some() {
                fenced = !fenced;
                ""
            } else if fenced {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A heading's anchor as mdBook makes it (GitHub's agrees for the
/// headings here): the text without code marks and link targets,
/// lowercased, spaces as `-`, other punctuation dropped.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // [label](target) -> label
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find("](")
            .and_then(|mid| after[mid..].find(')').map(|close| (mid, mid + close)))
        {
            Some((mid, close)) => {
                text.push_str(&after[..mid]);
                rest = &after[close + 1..];
            }
            None => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// Every heading anchor of a page; a repeated heading gets `-1`, `-2`...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in prose(text).lines() {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let heading = line[hashes..].trim();
            // mdBook's smart punctuation makes `--` outside code a dash,
            // which its anchor drops and GitHub's keeps as `--`.
            assert!(
                !heading.split('`').step_by(2).any(|t| t.contains("--")),
                "the heading {heading:?} has `--` outside code: its anchor differs between \
                 mdBook and GitHub; put the flag in `code`"
            );
            let base = slug(heading);
            let mut id = base.clone();
            let mut n = 0;
            while out.contains(&id) {
                n += 1;
                id = format!("{base}-{n}");
            }
            out.insert(id);
        }
    }
    out
}

/// Every link target (`](target)`) outside code, with its line.
fn links(text: &str) -> Vec<(usize, String)> {
    let text = prose(text);
    let mut out = Vec::new();
    let mut line = 1;
    let mut in_code = false;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\n' => line += 1,
            '`' => in_code = !in_code,
            ']' if !in_code && chars.get(i + 1) == Some(&'(') => {
                let target: String = chars[i + 2..].iter().take_while(|&&c| c != ')').collect();
                if !target.contains(char::is_whitespace) {
                    out.push((line, target));
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

#[test]
fn every_internal_link_and_anchor_resolves() {
    let pages = pages();
    let mut problems = Vec::new();
    for page in &pages {
        let own = anchors(&page.text);
        let dir = Path::new(&page.rel).parent().unwrap_or(Path::new(""));
        for (line, target) in links(&page.text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let at = format!("{}:{line}: link `{target}`", page.rel);
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            if path.is_empty() {
                let anchor = anchor.unwrap_or_default();
                if !own.contains(anchor) {
                    problems.push(format!("{at}: no heading `#{anchor}` on this page"));
                }
                continue;
            }
            let Some(resolved) = normalize(&dir.join(path)) else {
                problems.push(format!("{at}: leads out of the repository"));
                continue;
            };
            let file = root().join(&resolved);
            if !file.exists() {
                problems.push(format!(
                    "{at}: {} does not exist",
                    resolved.to_string_lossy()
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                let Ok(text) = std::fs::read_to_string(&file) else {
                    problems.push(format!("{at}: an anchor into a directory"));
                    continue;
                };
                let theirs = anchors(&text);
                if !theirs.contains(anchor) {
                    problems.push(format!(
                        "{at}: no heading `#{anchor}` in {} (its anchors: {})",
                        resolved.to_string_lossy(),
                        theirs.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

/// mdBook renders only what SUMMARY.md lists: every page is there, once,
/// and every entry exists.
#[test]
fn every_book_page_is_in_the_summary() {
    let summary = std::fs::read_to_string(root().join("docs/src/SUMMARY.md")).unwrap();
    let mut listed = BTreeSet::new();
    for (line, target) in links(&summary) {
        assert!(
            root().join("docs/src").join(&target).is_file(),
            "docs/src/SUMMARY.md:{line}: {target} does not exist"
        );
        assert!(
            listed.insert(format!("docs/src/{target}")),
            "docs/src/SUMMARY.md:{line}: {target} is listed twice"
        );
    }
    for page in pages() {
        if page.rel.starts_with("docs/src/") && page.rel != "docs/src/SUMMARY.md" {
            assert!(
                listed.contains(&page.rel),
                "{} is not in docs/src/SUMMARY.md: mdBook would not render it",
                page.rel
            );
        }
    }
}

/// What a ```toml snippet is merged into: the keys every config needs.
const BASE: &str = r#"
[nats]
url = "nats://127.0.0.1:4222"
user = "auth"
password = "authpw"

[callout]
issuer_seed_file = "issuer.nk"
account = "APP"
auth_account = "AUTH"

[oidc]
issuer = "https://id.example.com"
audience = "nats"
roles_claim = "roles"

[roles.base]
sub.allow = ["base.>"]
"#;

/// `snippet` over `base`: tables merged key by key, anything else (a
/// value, a list, `[[oidc]]` over `[oidc]`) replaced.
fn merge(base: &mut toml::Table, snippet: toml::Table) {
    for (key, value) in snippet {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => merge(mine, theirs),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Checks one ```toml block; `Err` says what is wrong.
fn check_toml(info: &str, body: &str) -> Result<(), String> {
    let snippet: toml::Table = toml::from_str(body).map_err(|e| format!("not TOML: {e}"))?;
    if flags(info).contains(&"client") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client.toml");
        std::fs::write(&file, body).unwrap();
        nats_oidc_client::settings::Settings::resolve(nats_oidc_client::settings::SettingsInput {
            config: Some(file),
            ..Default::default()
        })
        .map(drop)
        .map_err(|e| format!("the client config is refused: {e}"))
    } else {
        let mut config: toml::Table = toml::from_str(BASE).unwrap();
        merge(&mut config, snippet);
        let text = toml::to_string(&config).unwrap();
        if flags(info).contains(&"fragment") {
            Config::parse_shape(&text, Path::new("config.toml"))
                .map_err(|e| format!("the service's config parser refuses it: {e}"))
        } else {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("issuer.nk"),
                nkeys::KeyPair::new_account().seed().unwrap(),
            )
            .unwrap();
            Config::parse(&text, &dir.path().join("config.toml"))
                .map(drop)
                .map_err(|e| {
                    format!(
                        "the service's config check refuses it (merged into a minimal config; \
                         mark a snippet that names a deployment's files `toml fragment`): {e}"
                    )
                })
        }
    }
}

#[test]
fn every_toml_snippet_is_a_config_the_service_reads() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages() {
        for block in blocks(&page.text) {
            if flags(&block.info).first() != Some(&"toml") {
                continue;
            }
            checked += 1;
            if let Err(e) = check_toml(&block.info, &block.body) {
                problems.push(format!("{}:{}: {e}", page.rel, block.line));
            }
        }
    }
    assert!(checked >= 10, "only {checked} TOML snippets found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checks themselves: a misspelled key, a value of the wrong type and
/// broken TOML are each refused, in a table of its own too.
#[test]
fn a_broken_toml_snippet_fails_the_check() {
    assert!(check_toml("toml", "[roles.member]\npub.allow = [\"a.>\"]\n").is_ok());
    for (body, says) in [
        ("[roles.member]\npub.alow = [\"a.>\"]\n", "alow"),
        ("[oidc]\nleway = \"30s\"\n", "leway"),
        ("[callout]\nmax_token_bytes = \"big\"\n", "max_token_bytes"),
        ("[roles.member\n", "not TOML"),
        ("[callout]\nmax_user_ttl = \"an hour\"\n", "max_user_ttl"),
    ] {
        let e = check_toml("toml", body).expect_err(body);
        assert!(e.contains(says), "{body}: {e}");
    }
    let e = check_toml(
        "toml client",
        "[client]\nisuer = \"https://id.example.com\"\n",
    )
    .expect_err("a misspelled client key");
    assert!(e.contains("isuer"), "{e}");
}

/// The reference table's keys: `a.b` / `.c` in a cell is `a.b` and `a.c`
/// (a suffix replaces as many trailing segments of the first key as it
/// has), each with its row's text.
fn reference_rows() -> Vec<(usize, Vec<String>, String)> {
    let text = std::fs::read_to_string(root().join("docs/src/reference/configuration.md")).unwrap();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(cell) = line
            .strip_prefix("| `")
            .map(|_| line.split('|').nth(1).unwrap())
        else {
            continue;
        };
        let mut keys: Vec<String> = Vec::new();
        for name in cell.split('`').skip(1).step_by(2) {
            match name.strip_prefix('.') {
                Some(suffix) => {
                    let first = &keys[0];
                    let segments: Vec<&str> = first.split('.').collect();
                    let keep = segments.len() - suffix.split('.').count();
                    keys.push(format!("{}.{suffix}", segments[..keep].join(".")));
                }
                None => keys.push(name.to_string()),
            }
        }
        rows.push((i + 1, keys, line.to_string()));
    }
    rows
}

#[test]
fn the_configuration_reference_lists_every_key_of_the_config() {
    let schema = Config::keys();
    let rows = reference_rows();
    let page = "docs/src/reference/configuration.md";
    let mut problems = Vec::new();
    for (line, keys, _) in &rows {
        for key in keys {
            if !schema.contains(key) {
                problems.push(format!(
                    "{page}:{line}: `{key}` is not a key of the config (`Config::keys()` lists \
                     those there are)"
                ));
            }
        }
    }
    let leaves = schema.iter().filter(|key| {
        !schema.iter().any(|other| {
            other.starts_with(&format!("{key}.")) || other.starts_with(&format!("{key}[]"))
        })
    });
    for leaf in leaves {
        let documented = rows.iter().any(|(_, keys, row)| {
            keys.iter().any(|key| {
                if key == leaf {
                    return true;
                }
                // Below a documented key: free names, list elements, or
                // keys its row names (`{ start = ..., end = ... }`).
                let Some(rest) = leaf
                    .strip_prefix(key.as_str())
                    .filter(|r| r.starts_with('.') || r.starts_with("[]"))
                else {
                    return false;
                };
                rest.split(['.', '[', ']'])
                    .filter(|s| !s.is_empty())
                    .all(|s| s == "<name>" || row_names(row, s))
            })
        });
        if !documented {
            problems.push(format!(
                "{page}: the config key `{leaf}` has no row in the reference table"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Whether a reference row mentions `name` as a word.
fn row_names(row: &str, name: &str) -> bool {
    row.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == name)
}

#[test]
fn every_runnable_shell_snippet_runs() {
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_nats-oidc-callout"),
        bin.path().join("nats-oidc-callout"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    for page in pages() {
        let runnable: Vec<Block> = blocks(&page.text)
            .into_iter()
            .filter(|b| flags(&b.info) == ["sh", "run"])
            .collect();
        if runnable.is_empty() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            root().join("config.example.toml"),
            dir.path().join("config.example.toml"),
        )
        .unwrap();
        for block in runnable {
            ran += 1;
            let out = Command::new("bash")
                .args(["-euo", "pipefail", "-c", &block.body])
                .current_dir(dir.path())
                .env("PATH", &path)
                .env_remove("NATS_OIDC_CALLOUT_CONFIG")
                .env_remove("NATS_OIDC_CALLOUT_ISSUER_SEED")
                .env_remove("NATS_OIDC_CALLOUT_XKEY_SEED")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}:{}: the block failed ({}):\n{}\n--- stdout\n{}--- stderr\n{}",
                page.rel,
                block.line,
                out.status,
                block.body,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(ran >= 1, "no ```sh run block found");
}
