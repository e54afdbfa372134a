//! The documentation, checked against what it documents: the README's
//! configuration table against the real binary's `--help`, and every
//! relative link in the README and `docs/` against the files in the
//! repository. Neither needs MongoDB or a running server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

// Shared with the deployment-kit tests, which check the alerts' runbook
// links; the rest of the harness is not needed here.
#[path = "common/docs.rs"]
mod docs;
use docs::anchors_of;

/// The heading the configuration table sits under.
const CONFIG_HEADING: &str = "## Configuration";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `--long-flag` in one piece of text.
fn long_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let name: String = rest[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name.starts_with(|c: char| c.is_ascii_lowercase()) {
            flags.insert(name.clone());
        }
        rest = &rest[at + 2 + name.len()..];
    }
    flags
}

/// The long flags `busyapi --help` lists: the ones on the lines that open
/// an option's entry (`  -h, --help`, `      --listen <LISTEN>`), not the
/// flags its descriptions mention.
fn help_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_busyapi"))
        .arg("--help")
        .output()
        .expect("run busyapi --help");
    assert!(out.status.success(), "busyapi --help failed: {out:?}");
    let help = String::from_utf8(out.stdout).expect("--help is UTF-8");
    let flags: BTreeSet<String> = help
        .lines()
        .filter(|l| l.starts_with("  -") || l.starts_with("      --"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .flat_map(long_flags)
        .collect();
    assert!(flags.len() > 10, "too few flags found in --help:\n{help}");
    flags
}

/// The flags in the first column of the README's configuration table.
fn readme_table_flags() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let section = readme
        .split_once(&format!("\n{CONFIG_HEADING}\n"))
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("README.md has no '{CONFIG_HEADING}' section"));
    let rows: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and the |---| line
        .collect();
    assert!(!rows.is_empty(), "no table under '{CONFIG_HEADING}'");
    let mut flags = BTreeSet::new();
    for row in rows {
        let first = row.split('|').nth(1).unwrap_or_default();
        let named = long_flags(first);
        assert!(
            !named.is_empty(),
            "a configuration row names no flag: {row}"
        );
        flags.extend(named);
    }
    flags
}

#[test]
fn every_flag_in_help_is_in_the_readme_configuration_table_and_every_row_is_a_real_flag() {
    let help = help_flags();
    let table = readme_table_flags();
    let undocumented: Vec<_> = help.difference(&table).collect();
    let unknown: Vec<_> = table.difference(&help).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "README.md's configuration table and busyapi --help disagree:\n\
         in --help but not in the table: {undocumented:?}\n\
         in the table but not in --help: {unknown:?}"
    );
}

/// The README and every Markdown file under `docs/`.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut dirs = vec![repo().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read docs/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files
}

/// The targets of the inline links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    targets
}

#[test]
fn every_relative_link_in_the_readme_and_docs_points_at_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read markdown");
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("parent").join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{}: {target} (no such file)", file.display()));
            } else if !fragment.is_empty() {
                let doc = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors_of(&doc).contains(fragment) {
                    broken.push(format!("{}: {target} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
