//! A faster local S3-compatible server for `cargo xtask bench s3 --store s3s-fs`: s3s-fs,
//! installed from crates.io at a pinned version under `target/s3s-fs`, started on a free
//! 127.0.0.1 port with a fresh data directory, stopped by PID when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::paths::Paths;
use crate::process;

/// The pinned s3s-fs version (the newest that builds with this toolchain).
const VERSION: &str = "0.14.1";

/// A running s3s-fs server.
pub struct S3sFs {
    /// The server process.
    child: Child,
    /// Its data directory, removed when it stops.
    data: PathBuf,
    /// Its endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl S3sFs {
    /// Installs s3s-fs if needed and starts it.
    pub fn start(paths: &Paths) -> Result<Self> {
        let root = paths.target.join("s3s-fs");
        let bin = install(paths)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = root.join(format!("data-{port}"));
        std::fs::create_dir_all(&data).context("creating the s3s-fs data directory")?;
        let log = std::fs::File::create(root.join(format!("s3s-fs-{port}.log")))
            .context("creating the s3s-fs log")?;
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "bench", "--secret-key", "bench-secret"])
            .arg(&data)
            .stdout(log.try_clone().context("log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = S3sFs { child, data, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("s3s-fs did not start listening on 127.0.0.1:{port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("s3s-fs: started at {} (pid {})", server.endpoint, server.child.id());
        Ok(server)
    }
}

/// Installs s3s-fs [`VERSION`] under `target/s3s-fs` unless its marker says it is there;
/// returns the binary.
pub fn install(paths: &Paths) -> Result<PathBuf> {
    let root = paths.target.join("s3s-fs");
    let bin = root.join("bin").join("s3s-fs");
    let marker = root.join(format!("installed-{VERSION}"));
    if !bin.is_file() || !marker.is_file() {
        println!("==> installing s3s-fs {VERSION} into {}", root.display());
        let status = process::run_status(
            process::cargo(paths)
                .args([
                    "install",
                    "s3s-fs",
                    "--version",
                    VERSION,
                    "--features",
                    "binary",
                    "--locked",
                    "--root",
                ])
                .arg(&root),
        )?;
        if !status.success() {
            bail!("installing s3s-fs {VERSION} failed ({status})");
        }
        std::fs::write(&marker, VERSION).context("writing the install marker")?;
    }
    Ok(bin)
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
        println!("s3s-fs: stopped");
    }
}
