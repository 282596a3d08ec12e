//! The moto emulator (DESIGN.md §4): install into a virtual environment under `target/`, start
//! on a free 127.0.0.1 port, record endpoint and PID under `target/emulator/`, stop by PID.
//!
//! Unix only (it signals with the `kill` command and uses the venv's `bin/` layout).
//! `MOTO_ACCOUNT_ID` is never set: it would override every account server-wide and collapse
//! the two-account model; it is removed from the server's and the clients' environment.

use std::env;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::paths::Paths;
use crate::process;

/// The pinned emulator package (DESIGN.md §4).
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";
/// How long a fresh server gets to answer HTTP.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long SIGTERM gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often to poll while waiting for the server to come up or go away.
const POLL: Duration = Duration::from_millis(100);
/// Start attempts when the server dies before answering (another process took the port).
const START_ATTEMPTS: usize = 3;
/// Lines of the server log shown when it fails to start.
const LOG_TAIL_LINES: usize = 30;

/// Inherited variables that would point a test at other credentials, profiles or endpoints.
const CLIENT_ENV_REMOVED: &[&str] = &[
    "MOTO_ACCOUNT_ID",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

/// moto_server with the patches that let one account see and copy what
/// another shared with it (see the file).
const LAUNCHER: &str = include_str!("moto_server_escrow.py");

/// The launcher's patch modules, one per service, written beside it.
const PATCHES: [(&str, &str); 9] = [
    ("moto_patch_ec2.py", include_str!("moto_patch_ec2.py")),
    ("moto_patch_rds.py", include_str!("moto_patch_rds.py")),
    ("moto_patch_redshift.py", include_str!("moto_patch_redshift.py")),
    ("moto_patch_iam.py", include_str!("moto_patch_iam.py")),
    ("moto_patch_cloudwatch.py", include_str!("moto_patch_cloudwatch.py")),
    ("moto_patch_s3.py", include_str!("moto_patch_s3.py")),
    ("moto_patch_dynamodb.py", include_str!("moto_patch_dynamodb.py")),
    ("moto_patch_rbin.py", include_str!("moto_patch_rbin.py")),
    ("moto_patch_s3control.py", include_str!("moto_patch_s3control.py")),
];

/// The files of one emulator installation under `<target>/emulator`.
#[derive(Debug, Clone)]
pub struct Files {
    /// `<target>/emulator`.
    pub dir: PathBuf,
    /// The Python virtual environment.
    pub venv: PathBuf,
    /// Server stdout and stderr.
    pub log: PathBuf,
    /// pip output of the last install.
    pub pip_log: PathBuf,
    /// The endpoint URL of the running server.
    pub endpoint: PathBuf,
    /// The PID of the running server.
    pub pid: PathBuf,
    /// Records which requirement the venv holds, so a changed pin reinstalls.
    pub marker: PathBuf,
}

impl Files {
    /// The emulator files for this workspace's target directory.
    pub fn new(paths: &Paths) -> Self {
        let dir = paths.emulator_dir();
        let venv = dir.join("venv");
        Self {
            log: dir.join("moto.log"),
            pip_log: dir.join("pip.log"),
            endpoint: dir.join("endpoint"),
            pid: dir.join("pid"),
            marker: venv.join("escrow-sync-moto-requirement"),
            venv,
            dir,
        }
    }

    /// The venv's Python interpreter (it has boto3, a dependency of moto).
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin").join("python")
    }

    /// The venv's `moto_server` entry point (the installation check).
    fn moto_server(&self) -> PathBuf {
        self.venv.join("bin").join("moto_server")
    }

    /// The launcher that starts moto_server with the cross-account sharing
    /// patches (written from [`LAUNCHER`] before each start).
    fn launcher(&self) -> PathBuf {
        self.dir.join("moto_server_escrow.py")
    }

    /// The recorded `(pid, endpoint)`, if both files exist and parse.
    fn recorded(&self) -> Option<(u32, String)> {
        let pid = fs::read_to_string(&self.pid).ok()?.trim().parse().ok()?;
        let endpoint = fs::read_to_string(&self.endpoint).ok()?.trim().to_owned();
        Some((pid, endpoint))
    }

    /// Writes the endpoint and PID files.
    fn record(&self, pid: u32, endpoint: &str) -> Result<()> {
        fs::write(&self.endpoint, format!("{endpoint}\n"))
            .with_context(|| format!("writing {}", self.endpoint.display()))?;
        fs::write(&self.pid, format!("{pid}\n"))
            .with_context(|| format!("writing {}", self.pid.display()))
    }

    /// Removes the endpoint and PID files (missing files are fine).
    fn forget(&self) {
        let _ = fs::remove_file(&self.pid);
        let _ = fs::remove_file(&self.endpoint);
    }

    /// Removes the endpoint and PID files only if they still record `pid`.
    fn forget_if(&self, pid: u32) {
        if self.recorded().is_some_and(|(recorded, _)| recorded == pid) {
            self.forget();
        }
    }
}

/// A running emulator, started by this process or found running.
#[derive(Debug)]
pub struct Emulator {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The server's PID.
    pub pid: u32,
    /// The child handle when this process spawned the server (to reap it after stopping).
    child: Option<Child>,
    /// Whether this process started the server (a guard stops only what it started).
    pub started_here: bool,
    /// Where its endpoint and PID are recorded.
    files: Files,
}

impl Emulator {
    /// Stops the server: SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL; reaps it when this
    /// process spawned it and removes the endpoint and PID files.
    pub fn stop(mut self) -> Result<()> {
        let stopped = terminate(self.pid, self.child.as_mut());
        self.files.forget_if(self.pid);
        stopped
    }
}

/// Stops the emulator on drop if this process started it, so a failing or panicking test run
/// never leaves a server behind. A server that was already running is left running.
#[derive(Debug)]
pub struct Guard {
    /// The emulator; `None` once stopped.
    emulator: Option<Emulator>,
}

impl Guard {
    /// Starts the emulator (or finds the running one) and guards it.
    pub fn start(paths: &Paths) -> Result<Self> {
        let emulator = start(paths, false)?;
        if emulator.started_here {
            println!("emulator: started at {} (pid {})", emulator.endpoint, emulator.pid);
        } else {
            println!(
                "emulator: using the one already running at {} (pid {}); it stays running",
                emulator.endpoint, emulator.pid
            );
            // A demo killed during its audit could have left IAM enforcement on.
            set_iam_enforced(&emulator.endpoint, false)?;
        }
        Ok(Self { emulator: Some(emulator) })
    }

    /// The running emulator.
    pub fn emulator(&self) -> &Emulator {
        self.emulator.as_ref().expect("the guard holds its emulator until dropped")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(emulator) = self.emulator.take() else {
            return;
        };
        if !emulator.started_here {
            return;
        }
        let pid = emulator.pid;
        match emulator.stop() {
            Ok(()) => println!("emulator: stopped (pid {pid})"),
            Err(err) => eprintln!("emulator: could not stop pid {pid}: {err:#}"),
        }
    }
}

/// `cargo xtask emulator start|stop|status|env`.
pub fn command(paths: &Paths, args: &[String]) -> Result<ExitCode> {
    let files = Files::new(paths);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["start"] => {
            let emulator = start(paths, true)?;
            let how = if emulator.started_here { "started" } else { "already running" };
            println!(
                "emulator: {how} at {} (pid {}, log {})",
                emulator.endpoint,
                emulator.pid,
                paths.display(&files.log)
            );
            Ok(ExitCode::SUCCESS)
        }
        ["stop"] => {
            match files.recorded() {
                Some((pid, _)) if pid_state(pid) == PidState::Moto => {
                    terminate(pid, None)?;
                    files.forget();
                    println!("emulator: stopped (pid {pid})");
                }
                Some((pid, _)) => {
                    files.forget();
                    println!("emulator: not running (pid {pid} is gone; removed its record)");
                }
                None => {
                    files.forget();
                    println!("emulator: not running");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ["status"] => Ok(status(&files)),
        ["env"] => match running(&files) {
            Some((_, endpoint)) => {
                for (key, value) in client_env(paths, &endpoint) {
                    println!("export {key}='{value}'");
                }
                Ok(ExitCode::SUCCESS)
            }
            None => {
                bail!("the emulator is not running: start it with `cargo xtask emulator start`")
            }
        },
        _ => bail!("usage: cargo xtask emulator start|stop|status|env"),
    }
}

/// Prints whether the recorded emulator is alive; exit 0 if it is, 1 if not.
fn status(files: &Files) -> ExitCode {
    let Some((pid, endpoint)) = files.recorded() else {
        println!("emulator: not running");
        return ExitCode::from(1);
    };
    match pid_state(pid) {
        PidState::Moto => {
            let answers = port_of(&endpoint).is_some_and(answers_http);
            println!(
                "emulator: running at {endpoint} (pid {pid} alive, answering HTTP: {})",
                if answers { "yes" } else { "no" }
            );
            if answers { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        PidState::Gone | PidState::Other => {
            println!("emulator: not running (recorded endpoint {endpoint}, pid {pid} not alive)");
            ExitCode::from(1)
        }
    }
}

/// The recorded emulator if its PID is a live moto server.
fn running(files: &Files) -> Option<(u32, String)> {
    files.recorded().filter(|(pid, _)| pid_state(*pid) == PidState::Moto)
}

/// Returns the running emulator, or installs (if needed) and starts one.
///
/// `detach` puts the server in its own process group so it outlives the terminal job that
/// started it (`emulator start`); test and demo runs keep it in theirs so Ctrl-C stops it too.
pub fn start(paths: &Paths, detach: bool) -> Result<Emulator> {
    let files = Files::new(paths);
    if let Some((pid, endpoint)) = running(&files) {
        return Ok(Emulator { endpoint, pid, child: None, started_here: false, files });
    }
    files.forget();
    ensure_installed(paths, &files)?;

    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        match spawn(&files, detach) {
            Ok((child, endpoint)) => {
                let pid = child.id();
                files.record(pid, &endpoint)?;
                return Ok(Emulator {
                    endpoint,
                    pid,
                    child: Some(child),
                    started_here: true,
                    files,
                });
            }
            Err(SpawnError::Fatal(err)) => return Err(err),
            Err(SpawnError::Exited(err)) => last_error = Some(err),
        }
    }
    Err(last_error.expect("at least one start attempt"))
}

/// Why a start attempt failed.
enum SpawnError {
    /// The server exited before answering: worth another try on another port.
    Exited(anyhow::Error),
    /// Anything else.
    Fatal(anyhow::Error),
}

/// Starts `moto_server` on a free port and waits until it answers HTTP.
fn spawn(files: &Files, detach: bool) -> Result<(Child, String), SpawnError> {
    let fatal = SpawnError::Fatal;
    let port = free_port().map_err(fatal)?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let log = File::create(&files.log)
        .with_context(|| format!("creating {}", files.log.display()))
        .map_err(fatal)?;
    let log_err = log.try_clone().context("duplicating the log file handle").map_err(fatal)?;
    fs::write(files.launcher(), LAUNCHER)
        .with_context(|| format!("writing {}", files.launcher().display()))
        .map_err(fatal)?;
    for (name, text) in PATCHES {
        let path = files.dir.join(name);
        fs::write(&path, text)
            .with_context(|| format!("writing {}", path.display()))
            .map_err(fatal)?;
    }
    let mut cmd = Command::new(files.python());
    cmd.arg(files.launcher())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(&files.dir)
        .env_remove("MOTO_ACCOUNT_ID")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if detach {
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", files.launcher().display()))
        .map_err(fatal)?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(SpawnError::Exited(anyhow::anyhow!(
                "moto_server exited ({status}) before answering on {endpoint}; log {}:\n{}",
                files.log.display(),
                log_tail(&files.log)
            )));
        }
        if answers_http(port) {
            return Ok((child, endpoint));
        }
        if Instant::now() >= deadline {
            let _ = terminate(child.id(), Some(&mut child));
            return Err(fatal(anyhow::anyhow!(
                "moto_server did not answer on {endpoint} within {}s; log {}:\n{}",
                READY_TIMEOUT.as_secs(),
                files.log.display(),
                log_tail(&files.log)
            )));
        }
        sleep(POLL);
    }
}

/// Creates the venv and installs [`MOTO_REQUIREMENT`] unless the marker says it is there.
fn ensure_installed(paths: &Paths, files: &Files) -> Result<()> {
    let installed =
        fs::read_to_string(&files.marker).is_ok_and(|marker| marker.trim() == MOTO_REQUIREMENT);
    if installed && files.moto_server().is_file() {
        return Ok(());
    }
    fs::create_dir_all(&files.dir).with_context(|| format!("creating {}", files.dir.display()))?;
    crate::paths::ensure_venv(
        paths,
        "emulator",
        &files.venv,
        &files.python(),
        "the emulator needs Python 3 with the venv module on PATH",
    )?;
    println!(
        "emulator: installing {MOTO_REQUIREMENT} into {} (once; pip log {})",
        paths.display(&files.venv),
        paths.display(&files.pip_log)
    );
    let started = Instant::now();
    let log = File::create(&files.pip_log)
        .with_context(|| format!("creating {}", files.pip_log.display()))?;
    let status = Command::new(files.python())
        .args(["-m", "pip", "install", "--disable-pip-version-check", MOTO_REQUIREMENT])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the pip log handle")?)
        .stderr(log)
        .status()
        .context("running pip in the emulator venv")?;
    if !status.success() || !files.moto_server().is_file() {
        bail!(
            "installing {MOTO_REQUIREMENT} failed ({status}); log {}:\n{}",
            files.pip_log.display(),
            log_tail(&files.pip_log)
        );
    }
    fs::write(&files.marker, format!("{MOTO_REQUIREMENT}\n"))
        .with_context(|| format!("writing {}", files.marker.display()))?;
    println!("emulator: installed {MOTO_REQUIREMENT} in {}", process::secs(started.elapsed()));
    Ok(())
}

/// The environment a client of the emulator gets: endpoint, dummy credentials, region, no
/// instance metadata, and isolation from the developer's own AWS config files (the SDKs read
/// empty ones under `target/emulator/` instead).
pub fn client_env(paths: &Paths, endpoint: &str) -> Vec<(&'static str, String)> {
    let empty_file = |name: &str| {
        let path = paths.emulator_dir().join(name);
        if !path.is_file() {
            // Best effort: a missing file only makes the SDK log a warning.
            let _ = fs::create_dir_all(paths.emulator_dir());
            let _ = fs::write(&path, "");
        }
        path.to_string_lossy().into_owned()
    };
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("ESCROW_SYNC_EMULATOR", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        // Empty files, so a developer's profiles, credentials or per-service endpoints never
        // leak into a run against the emulator.
        ("AWS_CONFIG_FILE", empty_file("aws-config")),
        ("AWS_SHARED_CREDENTIALS_FILE", empty_file("aws-credentials")),
    ]
}

/// Gives `cmd` the emulator client environment ([`client_env`]) and removes inherited
/// variables that would send it elsewhere (other credentials, profiles, per-service endpoints,
/// `MOTO_ACCOUNT_ID`). Only `cmd` changes, never this process.
pub fn apply_client_env(cmd: &mut Command, paths: &Paths, endpoint: &str) {
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_ENDPOINT_URL_") {
            cmd.env_remove(key);
        }
    }
    for key in CLIENT_ENV_REMOVED {
        cmd.env_remove(key);
    }
    cmd.envs(client_env(paths, endpoint));
}

/// Clears all emulator state (`POST /moto-api/reset`).
pub fn reset(endpoint: &str) -> Result<()> {
    let port = port_of(endpoint).with_context(|| format!("no port in endpoint {endpoint}"))?;
    let status = http_status_line(port, "POST /moto-api/reset")
        .with_context(|| format!("resetting the emulator at {endpoint}"))?;
    if !status.contains(" 200") {
        bail!("resetting the emulator at {endpoint}: {status}");
    }
    Ok(())
}

/// Turns moto's IAM enforcement on (every request then needs an identity
/// whose policies allow it) or off (moto's default: anything goes), with
/// `POST /moto-api/reset-auth`.
pub fn set_iam_enforced(endpoint: &str, on: bool) -> Result<()> {
    let port = port_of(endpoint).with_context(|| format!("no port in endpoint {endpoint}"))?;
    let body = if on { "0" } else { "inf" };
    let status = http_status_line_with(port, "POST /moto-api/reset-auth", body)
        .with_context(|| format!("switching IAM enforcement at {endpoint}"))?;
    if !status.contains(" 200") {
        bail!("switching IAM enforcement at {endpoint}: {status}");
    }
    Ok(())
}

/// IAM enforcement on while it lives; off again when dropped, also when the
/// step in between failed, so a shared emulator goes back to its default.
pub struct IamEnforced(String);

impl IamEnforced {
    /// Turns enforcement on at `endpoint`.
    pub fn on(endpoint: &str) -> Result<Self> {
        set_iam_enforced(endpoint, true)?;
        Ok(IamEnforced(endpoint.to_owned()))
    }
}

impl Drop for IamEnforced {
    fn drop(&mut self) {
        if let Err(e) = set_iam_enforced(&self.0, false) {
            eprintln!("xtask: warning: IAM enforcement may still be on at {}: {e:#}", self.0);
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to find a port")?;
    Ok(listener.local_addr()?.port())
}

/// The port of `http://127.0.0.1:PORT`.
fn port_of(endpoint: &str) -> Option<u16> {
    endpoint.rsplit_once(':')?.1.trim_end_matches('/').parse().ok()
}

/// True when something answers HTTP on 127.0.0.1:`port`.
fn answers_http(port: u16) -> bool {
    http_status_line(port, "GET /moto-api/").is_ok_and(|line| line.starts_with("HTTP/"))
}

/// Sends `request` (method and path) as an HTTP/1.0 request to 127.0.0.1:`port` and returns
/// the response's status line.
fn http_status_line(port: u16, request: &str) -> std::io::Result<String> {
    http_status_line_with(port, request, "")
}

/// Sends `request` (a method and path) with `body`; returns the status line.
fn http_status_line_with(port: u16, request: &str, body: &str) -> std::io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{request} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    let mut chunk = [0_u8; 256];
    while !response.contains(&b'\n') && response.len() < 4096 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// The last [`LOG_TAIL_LINES`] lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    let tail = lines[start..].join("\n");
    if tail.is_empty() { "(empty)".to_owned() } else { tail }
}

/// What a recorded PID currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PidState {
    /// A live moto server.
    Moto,
    /// No such process (or a zombie).
    Gone,
    /// A live process that is not a moto server: the PID was reused, never signal it.
    Other,
}

/// Looks `pid` up in `/proc` (or with `ps` where there is no `/proc`).
fn pid_state(pid: u32) -> PidState {
    /// Classifies a process from its state letter and command line.
    fn classify(state: Option<char>, command_line: &str) -> PidState {
        match state {
            None | Some('Z' | 'X') => PidState::Gone,
            Some(_) if command_line.contains("moto_server") => PidState::Moto,
            Some(_) => PidState::Other,
        }
    }
    let proc_dir = Path::new("/proc").join(pid.to_string());
    if Path::new("/proc/self/stat").exists() {
        let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else {
            return PidState::Gone;
        };
        // "PID (COMM) STATE ...": COMM may contain spaces and parentheses.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        let cmdline = fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        return classify(state, &String::from_utf8_lossy(&cmdline));
    }
    let Ok(output) =
        Command::new("ps").args(["-o", "stat=", "-o", "args=", "-p", &pid.to_string()]).output()
    else {
        return PidState::Gone;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.trim();
    classify(line.chars().next(), line)
}

/// Sends `signal` (a name such as `TERM`) to `pid` with the `kill` command.
fn signal(pid: u32, signal: &str) {
    process::probe(Command::new("kill").args(["-s", signal, &pid.to_string()]));
}

/// Waits up to `timeout` for `pid` to exit; reaps it through `child` when given.
fn wait_gone(pid: u32, mut child: Option<&mut Child>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let gone = match child.as_deref_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => pid_state(pid) != PidState::Moto,
        };
        if gone {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL);
    }
}

/// SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL; `child` (if this process spawned the
/// server) is reaped.
fn terminate(pid: u32, mut child: Option<&mut Child>) -> Result<()> {
    signal(pid, "TERM");
    if wait_gone(pid, child.as_deref_mut(), STOP_GRACE) {
        return Ok(());
    }
    eprintln!(
        "emulator: pid {pid} still alive {}s after SIGTERM; sending SIGKILL",
        STOP_GRACE.as_secs()
    );
    signal(pid, "KILL");
    if wait_gone(pid, child, Duration::from_secs(5)) {
        return Ok(());
    }
    bail!("pid {pid} survived SIGKILL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_is_read_from_the_endpoint() {
        assert_eq!(port_of("http://127.0.0.1:5123"), Some(5123));
        assert_eq!(port_of("http://127.0.0.1:5123/"), Some(5123));
        assert_eq!(port_of("http://127.0.0.1"), None);
    }

    #[test]
    fn free_port_is_nonzero_and_bindable() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn own_process_is_not_mistaken_for_moto() {
        assert_eq!(pid_state(std::process::id()), PidState::Other);
    }

    #[test]
    fn client_env_never_sets_moto_account_id() {
        let paths = Paths::discover().unwrap();
        let env = client_env(&paths, "http://127.0.0.1:1");
        assert!(env.iter().all(|(key, _)| *key != "MOTO_ACCOUNT_ID"));
        assert!(env.contains(&("AWS_ENDPOINT_URL", "http://127.0.0.1:1".to_owned())));
        assert!(CLIENT_ENV_REMOVED.contains(&"MOTO_ACCOUNT_ID"));
    }
}
