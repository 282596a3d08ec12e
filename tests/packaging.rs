//! Packaging: the Dockerfile and what `cargo xtask dist` ships.
//!
//! - The Dockerfile is linted by parsing it: a multi-stage build whose builder compiles only
//!   `escrow-sync-cli` with `--release --locked`, a distroless (or scratch) runtime stage that
//!   runs as a non-root user, `ENTRYPOINT` the `escrow-sync` binary copied from the builder, no
//!   floating `latest` tags, no `ADD` of URLs; `.dockerignore` keeps `target/` and `.git` out.
//!   Each rule is shown to fire on a Dockerfile that breaks it.
//! - When a container engine answers (`docker info` succeeds), `docker build --check .` runs
//!   BuildKit's own lint as well (seconds: no image is built). Without one the test says so on
//!   stderr and relies on the lint above.
//! - `escrow-sync generate` (hidden; `cargo xtask dist` runs it on the release binary) writes
//!   completions for five shells and the man pages, run here on the debug binary.
//!
//! No emulator: nothing here contacts AWS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use escrow_sync_e2e::{binary, workspace_root};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One Dockerfile instruction: its keyword (upper case), its arguments with line continuations
/// joined, and the line it starts on.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
    line: usize,
}

/// The instructions of a Dockerfile: comments and blank lines dropped (also inside a
/// continuation, as Docker does), lines ending in `\` joined to the next.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(body) => (body.trim_end(), true),
            None => (trimmed, false),
        };
        let (start, mut joined) = current.take().unwrap_or((i + 1, String::new()));
        if !joined.is_empty() {
            joined.push(' ');
        }
        joined.push_str(body);
        if continues {
            current = Some((start, joined));
        } else {
            let (keyword, args) = joined.split_once(char::is_whitespace).unwrap_or((&joined, ""));
            out.push(Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
                line: start,
            });
        }
    }
    out
}

/// One build stage: its base image (global `ARG` defaults substituted), its name, its
/// instructions after `FROM`.
#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    line: usize,
    body: Vec<Instruction>,
}

/// Replaces `${NAME}` and `$NAME` by the values in `vars`; `Err` names a variable without one.
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(|| format!("unclosed ${{ in `{text}`"))?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let value = vars.get(name).ok_or_else(|| format!("`{name}` has no default"))?;
        out.push_str(value);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// The stages of a Dockerfile, or the problems that kept it from being read.
fn stages(text: &str) -> Result<Vec<Stage>, Vec<String>> {
    let mut vars = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut problems = Vec::new();
    for ins in instructions(text) {
        match ins.keyword.as_str() {
            "ARG" if stages.is_empty() => {
                // Without a default, the build needs `--build-arg`: not pinned by this file.
                if let Some((name, default)) = ins.args.split_once('=') {
                    vars.insert(
                        name.trim().to_owned(),
                        default.trim().trim_matches('"').to_owned(),
                    );
                } else {
                    vars.remove(ins.args.trim());
                }
            }
            "FROM" => {
                let words: Vec<&str> =
                    ins.args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                    [_] => None,
                    _ => {
                        problems
                            .push(format!("line {}: cannot read `FROM {}`", ins.line, ins.args));
                        None
                    }
                };
                let base = words.first().map_or(Ok(String::new()), |w| substitute(w, &vars));
                let base = base.unwrap_or_else(|e| {
                    problems.push(format!("line {}: FROM {}: {e}", ins.line, ins.args));
                    String::new()
                });
                stages.push(Stage { base, name, line: ins.line, body: Vec::new() });
            }
            _ => match stages.last_mut() {
                Some(stage) => stage.body.push(ins),
                None => {
                    problems.push(format!("line {}: {} before any FROM", ins.line, ins.keyword))
                }
            },
        }
    }
    if problems.is_empty() { Ok(stages) } else { Err(problems) }
}

/// The tag of an image reference (`None` when it has none; a digest counts as a tag).
fn tag(image: &str) -> Option<&str> {
    if let Some((_, digest)) = image.split_once('@') {
        return Some(digest);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, tag)| tag)
}

/// The value of `--from=` (or `--from `) of a COPY, and the rest of its arguments.
fn copy_from(args: &str) -> (Option<String>, Vec<String>) {
    let mut from = None;
    let mut rest = Vec::new();
    let mut words = args.split_whitespace();
    while let Some(word) = words.next() {
        if let Some(value) = word.strip_prefix("--from=") {
            from = Some(value.to_owned());
        } else if word == "--from" {
            from = words.next().map(str::to_owned);
        } else if !word.starts_with("--") {
            rest.push(word.to_owned());
        }
    }
    (from, rest)
}

/// Whether an ignore-file pattern (normalised) names `path` or a parent of it.
fn ignores(patterns: &[String], path: &str) -> bool {
    patterns.iter().any(|p| p == path || path.starts_with(&format!("{p}/")) || p == "*")
}

/// The problems of a Dockerfile and its `.dockerignore`, each naming the rule it breaks.
fn lint(dockerfile: &str, dockerignore: &str) -> Vec<String> {
    let stages = match stages(dockerfile) {
        Ok(stages) => stages,
        Err(problems) => return problems,
    };
    let mut problems = Vec::new();
    if stages.len() < 2 {
        problems.push(format!(
            "multi-stage: {} FROM, need a builder stage and a runtime stage",
            stages.len()
        ));
    }

    // Bases: pinned, never `latest`; a stage may start from an earlier stage.
    for (i, stage) in stages.iter().enumerate() {
        let earlier = stages[..i].iter().any(|s| s.name.as_deref() == Some(stage.base.as_str()));
        if earlier || stage.base == "scratch" {
            continue;
        }
        match tag(&stage.base) {
            None => problems.push(format!(
                "line {}: `{}` has no tag, which means `latest`: pin a version",
                stage.line, stage.base
            )),
            Some(t) if t == "latest" || t.starts_with("latest-") || t.ends_with("-latest") => {
                problems.push(format!(
                    "line {}: `{}` is a `latest` tag: pin a version",
                    stage.line, stage.base
                ))
            }
            Some(_) => {}
        }
    }

    // No ADD of URLs, anywhere: remote content enters unchecked.
    for ins in stages.iter().flat_map(|s| &s.body).filter(|i| i.keyword == "ADD") {
        if ins
            .args
            .split_whitespace()
            .any(|w| w.starts_with("http://") || w.starts_with("https://") || w.starts_with("git@"))
        {
            problems.push(format!("line {}: ADD of a URL (`ADD {}`)", ins.line, ins.args));
        }
    }

    let Some(last) = stages.last() else { return problems };
    let last_index = stages.len() - 1;

    // The runtime stage: distroless or scratch, non-root.
    if !(last.base.starts_with("gcr.io/distroless/") || last.base == "scratch") {
        problems.push(format!(
            "line {}: the runtime stage starts from `{}`: use a distroless or scratch base",
            last.line, last.base
        ));
    }
    let user = last.body.iter().rev().find(|i| i.keyword == "USER").map(|i| i.args.clone());
    let root = |u: &str| matches!(u.split(':').next().unwrap_or(u), "root" | "0");
    let nonroot_base = tag(&last.base).is_some_and(|t| t.ends_with("nonroot"));
    match user {
        Some(u) if root(&u) => {
            problems.push(format!("the runtime stage runs as root (`USER {u}`)"));
        }
        Some(_) => {}
        None if nonroot_base => {}
        None => problems.push(
            "the runtime stage runs as root: add `USER` or start from a `:nonroot` base".to_owned(),
        ),
    }

    // ENTRYPOINT: exec form, the escrow-sync binary.
    match last.body.iter().rev().find(|i| i.keyword == "ENTRYPOINT") {
        None => problems.push("the runtime stage has no ENTRYPOINT".to_owned()),
        Some(ins) => match serde_json::from_str::<Vec<String>>(&ins.args) {
            Ok(argv)
                if argv.first().is_some_and(|p| p.rsplit('/').next() == Some("escrow-sync")) => {}
            Ok(argv) => problems.push(format!(
                "line {}: ENTRYPOINT runs {:?}, not the escrow-sync binary",
                ins.line,
                argv.first()
            )),
            Err(_) => problems.push(format!(
                "line {}: ENTRYPOINT `{}` is not in exec form (a JSON array): a shell would \
                 take SIGTERM",
                ins.line, ins.args
            )),
        },
    }

    // The binary comes from a builder stage that compiles only escrow-sync-cli, release, locked.
    let copies: Vec<(String, Vec<String>)> = last
        .body
        .iter()
        .filter(|i| i.keyword == "COPY")
        .filter_map(|i| match copy_from(&i.args) {
            (Some(from), paths) => Some((from, paths)),
            (None, _) => None,
        })
        .collect();
    let builder = copies
        .iter()
        .filter(|(_, paths)| {
            let sources = &paths[..paths.len().saturating_sub(1)];
            sources.iter().any(|p| p.ends_with("escrow-sync"))
        })
        .find_map(|(from, _)| {
            stages[..last_index].iter().enumerate().find(|(i, s)| {
                s.name.as_deref() == Some(from.as_str()) || from.parse::<usize>() == Ok(*i)
            })
        });
    match builder {
        None => problems.push(
            "the runtime stage has no `COPY --from=<builder stage>` of the escrow-sync binary"
                .to_owned(),
        ),
        Some((_, stage)) => {
            let build = stage
                .body
                .iter()
                .filter(|i| i.keyword == "RUN")
                .find(|i| i.args.contains("cargo build"));
            match build {
                None => problems
                    .push(format!("the builder stage (line {}) runs no `cargo build`", stage.line)),
                Some(ins) => {
                    let words: Vec<&str> = ins.args.split_whitespace().collect();
                    let has = |flag: &str| words.contains(&flag);
                    let package = words
                        .windows(2)
                        .any(|w| matches!(w[0], "-p" | "--package") && w[1] == "escrow-sync-cli")
                        || has("--package=escrow-sync-cli");
                    for (ok, what) in [
                        (has("--release"), "--release"),
                        (has("--locked"), "--locked (exactly Cargo.lock)"),
                        (package, "-p escrow-sync-cli (the binary only, not the workspace)"),
                    ] {
                        if !ok {
                            problems.push(format!("line {}: cargo build without {what}", ins.line));
                        }
                    }
                    if has("--workspace") || has("--all") {
                        problems.push(format!("line {}: cargo build of the workspace", ins.line));
                    }
                }
            }
        }
    }

    // The context: no build output or history; the sources stay in.
    let patterns: Vec<String> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_owned())
        .collect();
    for path in ["target", ".git"] {
        if !ignores(&patterns, path) {
            problems.push(format!(".dockerignore does not keep `{path}` out of the context"));
        }
    }
    for path in ["Cargo.toml", "Cargo.lock", "crates", "xtask", "tests", "benches"] {
        if ignores(&patterns, path) {
            problems.push(format!(".dockerignore keeps `{path}` out, which the build needs"));
        }
    }
    problems
}

fn dockerfile() -> String {
    read(&workspace_root().join("Dockerfile"))
}

fn dockerignore() -> String {
    read(&workspace_root().join(".dockerignore"))
}

#[test]
fn the_dockerfile_passes_the_lint() {
    let problems = lint(&dockerfile(), &dockerignore());
    assert!(problems.is_empty(), "Dockerfile problems:\n{}", problems.join("\n"));
    let stages = stages(&dockerfile()).unwrap();
    assert_eq!(stages.len(), 2, "{stages:#?}");
    assert_eq!(stages[1].base, "gcr.io/distroless/cc-debian12:nonroot");
    assert!(stages[0].base.starts_with("rust:1."), "{}", stages[0].base);
}

/// `text` with `from` replaced by `to`; panics when `from` is not there (the variant would test
/// nothing).
fn variant(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the Dockerfile no longer contains {from:?}");
    text.replacen(from, to, 1)
}

/// The lint of `dockerfile` must report a problem containing `expected`.
#[track_caller]
fn fires(dockerfile: &str, dockerignore: &str, expected: &str) {
    let problems = lint(dockerfile, dockerignore);
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected a problem containing {expected:?}, got {problems:#?}"
    );
}

#[test]
fn each_lint_rule_fires_on_a_dockerfile_that_breaks_it() {
    let good = dockerfile();
    let ignore = dockerignore();
    let runtime_from = "FROM gcr.io/distroless/cc-debian12:nonroot AS runtime";

    // One stage only: the runtime part removed.
    let single = good[..good.find(runtime_from).unwrap()].to_owned();
    fires(&single, &ignore, "multi-stage: 1 FROM");

    fires(
        &variant(&good, "ARG RUST_VERSION=1.95", "ARG RUST_VERSION=latest"),
        &ignore,
        "`rust:latest-slim-bookworm` is a `latest` tag",
    );
    fires(
        &variant(&good, runtime_from, "FROM gcr.io/distroless/cc-debian12:latest AS runtime"),
        &ignore,
        "`gcr.io/distroless/cc-debian12:latest` is a `latest` tag",
    );
    fires(
        &variant(&good, "rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE}", "rust"),
        &ignore,
        "has no tag",
    );
    fires(
        &variant(&good, runtime_from, "FROM gcr.io/distroless/cc-debian12 AS runtime"),
        &ignore,
        "has no tag",
    );
    fires(&variant(&good, "ARG RUST_VERSION=1.95", "ARG RUST_VERSION"), &ignore, "no default");
    fires(
        &variant(&good, "WORKDIR /src", "WORKDIR /src\nADD https://example.com/x.tar.gz /x"),
        &ignore,
        "ADD of a URL",
    );
    fires(&variant(&good, "USER nonroot:nonroot", "USER root"), &ignore, "runs as root");
    fires(&variant(&good, "USER nonroot:nonroot", "USER 0:0"), &ignore, "runs as root");
    fires(
        &variant(
            &variant(&good, "USER nonroot:nonroot\n", ""),
            runtime_from,
            "FROM gcr.io/distroless/cc-debian12:debug AS runtime",
        ),
        &ignore,
        "runs as root",
    );
    fires(
        &variant(&good, runtime_from, "FROM debian:bookworm-slim AS runtime"),
        &ignore,
        "distroless or scratch",
    );
    fires(
        &variant(
            &good,
            r#"ENTRYPOINT ["/usr/local/bin/escrow-sync"]"#,
            "ENTRYPOINT /usr/local/bin/escrow-sync",
        ),
        &ignore,
        "not in exec form",
    );
    fires(
        &variant(
            &good,
            r#"ENTRYPOINT ["/usr/local/bin/escrow-sync"]"#,
            r#"ENTRYPOINT ["/bin/sh"]"#,
        ),
        &ignore,
        "not the escrow-sync binary",
    );
    fires(
        &variant(&good, r#"ENTRYPOINT ["/usr/local/bin/escrow-sync"]"#, ""),
        &ignore,
        "no ENTRYPOINT",
    );
    fires(
        &variant(&good, "COPY --from=builder", "COPY --from=elsewhere"),
        &ignore,
        "no `COPY --from=<builder stage>`",
    );
    fires(&variant(&good, "--release --locked", "--release"), &ignore, "without --locked");
    fires(&variant(&good, "--release --locked", "--locked"), &ignore, "without --release");
    fires(
        &variant(&good, "-p escrow-sync-cli --bin escrow-sync", "--workspace"),
        &ignore,
        "without -p escrow-sync-cli",
    );
    fires(&good, &variant(&ignore, "\ntarget/\n", "\n"), "`target` out of the context");
    fires(&good, &variant(&ignore, "\n.git/\n", "\n"), "`.git` out of the context");
    fires(&good, &format!("{ignore}\ncrates/\n"), "keeps `crates` out");
}

#[test]
fn instructions_join_continuations_and_skip_comments() {
    let parsed = instructions("# c\nFROM a:1 AS b\nRUN one \\\n  # inside\n  two\n\nUSER x\n");
    let got: Vec<(&str, &str, usize)> =
        parsed.iter().map(|i| (i.keyword.as_str(), i.args.as_str(), i.line)).collect();
    assert_eq!(got, [("FROM", "a:1 AS b", 2), ("RUN", "one two", 3), ("USER", "x", 7)]);
    assert_eq!(tag("registry:5000/img"), None);
    assert_eq!(tag("registry:5000/img:1.2"), Some("1.2"));
    assert_eq!(tag("img@sha256:abc"), Some("sha256:abc"));
}

/// Whether a container engine answers: `docker info` exits 0.
fn docker_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn buildkit_checks_the_dockerfile_when_a_container_engine_answers() {
    if !docker_answers() {
        eprintln!(
            "packaging: no container engine answers (`docker info` failed): `docker build \
             --check` not run; the Dockerfile is checked by the lint tests of this file only"
        );
        return;
    }
    // --check runs the build's checks and stops: no image, no Rust build.
    let out = Command::new("docker")
        .args(["build", "--check", "."])
        .current_dir(workspace_root())
        .output()
        .expect("run docker build --check");
    assert!(
        out.status.success(),
        "docker build --check failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh directory under the system's temp directory.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("escrow-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs the binary with `args`; returns (exit code, stdout, stderr).
fn escrow_sync(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary()).args(args).output().expect("run escrow-sync");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn generate_writes_completions_for_five_shells() {
    let dir = scratch_dir("completions");
    let dir_arg = dir.to_str().unwrap();
    let (code, stdout, stderr) = escrow_sync(&[
        "generate",
        "completions",
        "bash",
        "zsh",
        "fish",
        "powershell",
        "elvish",
        "--dir",
        dir_arg,
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let names = [
        "escrow-sync.bash",
        "_escrow-sync",
        "escrow-sync.fish",
        "_escrow-sync.ps1",
        "escrow-sync.elv",
    ];
    for name in names {
        let path = dir.join(name);
        assert!(stdout.lines().any(|l| Path::new(l) == path), "{name} not reported: {stdout}");
        let text = read(&path);
        for word in ["plan", "run", "verify", "restore", "accept-mass-change", "config"] {
            assert!(text.contains(word), "{name} does not complete {word}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let (code, _, stderr) = escrow_sync(&["generate", "completions", "tcsh", "--dir", dir_arg]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {stderr}");
    assert!(stderr.contains("tcsh"), "{stderr}");
    assert!(!dir.exists(), "nothing written for a refused shell");
}

#[test]
fn generate_writes_a_man_page_per_command() {
    let dir = scratch_dir("man");
    let (code, stdout, stderr) = escrow_sync(&["generate", "man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let root = read(&dir.join("escrow-sync.1"));
    assert!(root.starts_with(".ie"), "roff: {}", &root[..root.len().min(80)]);
    assert!(root.contains(".TH escrow-sync 1"), "{root}");
    for command in ["plan", "run", "verify", "prune", "policy", "audit", "restore"] {
        assert!(root.contains(command), "escrow-sync.1 does not list {command}");
        let page = dir.join(format!("escrow-sync-{command}.1"));
        assert!(page.is_file(), "no man page for {command}");
        assert!(stdout.lines().any(|l| Path::new(l) == page), "{command} not reported: {stdout}");
    }
    // roff escapes the hyphens of option names.
    assert!(read(&dir.join("escrow-sync-run.1")).contains(r"accept\-mass\-change"));
    // The packagers' command has no page: it is hidden.
    assert!(!dir.join("escrow-sync-generate.1").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn generate_is_hidden_from_help() {
    let (code, stdout, _) = escrow_sync(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("verify"), "{stdout}");
    assert!(!stdout.contains("generate"), "generate is for packagers, not in --help: {stdout}");
}
