//! The documentation stays true of the code: the README's first commands are the two xtask
//! commands and `.ci/run` runs the README's test command; every relative link of the README,
//! CONTRIBUTING.md, `docs/` and the crate READMEs reaches a file (and a heading, for
//! `#anchors`); the policy excerpts in `docs/permissions.md` are what `escrow-sync policy`
//! prints for the config shown there. No emulator: `policy` contacts nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The workspace root (the parent of `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The fenced code blocks of `text` as (info string, body, the text before the fence).
fn fences(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    let mut before = String::new();
    while let Some(line) = lines.next() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            let mut body = String::new();
            for inner in lines.by_ref() {
                if inner.trim_start().starts_with("```") {
                    break;
                }
                body.push_str(inner);
                body.push('\n');
            }
            out.push((info.trim().to_string(), body, std::mem::take(&mut before)));
        } else {
            before.push_str(line);
            before.push('\n');
        }
    }
    out
}

#[test]
fn readme_starts_with_the_two_commands_and_ci_runs_its_test_command() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines: keep it at most 250, move detail to docs/");
    let first_sh = fences(&readme)
        .into_iter()
        .find(|(info, _, _)| info == "sh")
        .expect("README.md has a ```sh block");
    let commands: Vec<&str> = first_sh
        .1
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands, ["cargo xtask demo", "cargo xtask test"], "README's first commands");
    let ci = read(&root().join(".ci/run"));
    let last = ci.lines().rev().find(|l| !l.trim().is_empty() && !l.starts_with('#')).unwrap();
    assert_eq!(last.trim(), "cargo xtask test", ".ci/run must run exactly the README's command");
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown file's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// `](target)` links of `text`, outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_reaches_a_file_and_heading() {
    let root = root();
    let mut files = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    for dir in ["docs", "crates"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            } else if path.join("README.md").is_file() {
                files.push(path.join("README.md"));
            }
        }
    }
    let mut checked = 0;
    for file in &files {
        let text = read(file);
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target =
                if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            assert!(target.exists(), "{}: link {link} reaches nothing", file.display());
            if !anchor.is_empty() {
                let headings = anchors(&read(&target));
                assert!(
                    headings.contains(anchor),
                    "{}: link {link}: no heading #{anchor} in {}",
                    file.display(),
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links found: is the link parser broken?");
}

/// `value` at a dotted `path` (`primary.reader_role.trust_policy`); a segment may hold dots
/// itself only as the last one (bucket names).
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut v = value;
    let parts: Vec<&str> = path.split('.').collect();
    let mut i = 0;
    while i < parts.len() {
        let key = parts[i..].join(".");
        if let Some(found) = v.get(&key) {
            return found;
        }
        v = v.get(parts[i]).unwrap_or_else(|| panic!("no {} in the policy output", parts[i]));
        i += 1;
    }
    v
}

#[test]
fn permission_excerpts_are_what_policy_prints() {
    let doc = read(&root().join("docs/permissions.md"));
    let blocks = fences(&doc);
    let marker = |before: &str| {
        before
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- "))
            .and_then(|l| l.strip_suffix(" -->"))
            .map(str::to_string)
    };
    let config = blocks
        .iter()
        .find(|(_, _, before)| marker(before).as_deref() == Some("policy-config"))
        .map(|(_, body, _)| body.clone())
        .expect("docs/permissions.md marks its config with <!-- policy-config -->");
    let dir = std::env::temp_dir().join(format!("escrow-sync-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("escrow.toml");
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(escrow_sync_e2e::binary())
        .args(["policy", "--config"])
        .arg(&path)
        .output()
        .expect("run escrow-sync policy");
    assert!(out.status.success(), "policy failed: {}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("policy prints JSON");
    let mut checked = 0;
    for (_, body, before) in &blocks {
        let Some(mark) = marker(before) else { continue };
        if let Some(path) = mark.strip_prefix("policy: ") {
            let excerpt: Value = serde_json::from_str(body).expect("excerpt is JSON");
            assert_eq!(&excerpt, at(&printed, path), "docs/permissions.md {path}");
            checked += 1;
        } else if let Some(path) = mark.strip_prefix("policy-statements: ") {
            let excerpt: Vec<Value> = serde_json::from_str(body).expect("excerpt is a JSON list");
            let statements = at(&printed, path)["Statement"].as_array().expect("statements");
            for statement in &excerpt {
                assert!(
                    statements.contains(statement),
                    "docs/permissions.md {path}: {statement} is not among the statements \
                     `policy` prints: {statements:#?}"
                );
            }
            checked += 1;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(checked >= 5, "only {checked} excerpts checked");
}
