//! A PostgreSQL cluster of a test's own: `initdb` into a temporary folder, `pg_ctl` on a spare
//! port, never the shared server. Shared by `tests/postgres.rs` and the chaos suite
//! (`tests/chaos/`), each including this file with `#[path]`.
//!
//! As root, the server binaries run as the `postgres` user (initdb refuses root).
#![allow(dead_code)] // each includer uses part of it

use std::path::PathBuf;
use std::process::Command;

pub(crate) struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// The folder holding `initdb` and `pg_ctl`: `PG_BIN`, else `pg_config --bindir`, else
    /// the newest `/usr/lib/postgresql/<version>/bin`.
    pub(crate) fn find_bin() -> Option<PathBuf> {
        let from_pg_config = || {
            Command::new("pg_config")
                .arg("--bindir")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        };
        let newest_installed = || {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect();
            dirs.sort_by_key(|d| {
                d.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
            });
            dirs.pop()
        };
        std::env::var_os("PG_BIN")
            .map(PathBuf::from)
            .into_iter()
            .chain(from_pg_config())
            .chain(newest_installed())
            .find(|b| b.join("initdb").exists())
    }

    /// A started cluster, or `None` (with a note saying why the test skipped) when no server
    /// binaries are installed. Any other failure panics.
    pub(crate) fn start() -> Option<Self> {
        let Some(bin) = Self::find_bin() else {
            eprintln!(
                "skipped: no PostgreSQL server binaries found (set PG_BIN to the folder holding initdb and pg_ctl)"
            );
            return None;
        };
        Some(Self::start_in(bin).unwrap_or_else(|e| panic!("{e}")))
    }

    /// `initdb` and `pg_ctl start` with the binaries in `bin`, on a spare port.
    pub(crate) fn start_in(bin: PathBuf) -> Result<Self, String> {
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let dir =
            std::env::temp_dir().join(format!("jobforge-pg-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no spare port: {e}"))?
            .port();
        // From here on, dropping `cluster` stops the server and removes the folder.
        let cluster = Self {
            bin,
            dir,
            port,
            as_postgres,
        };
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&cluster.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err("chown of the cluster folder to postgres failed".to_owned());
            }
        }
        cluster.run(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-D",
                cluster.data().as_str(),
            ],
        )?;
        cluster.try_pg_ctl("start")?;
        Ok(cluster)
    }

    pub(crate) fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file (`pg_ctl -l`).
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `pg_ctl <action>` (`start`, `stop`, `restart`), waiting for it; stop and restart are
    /// `-m fast`. Panics on failure.
    pub(crate) fn pg_ctl(&self, action: &str) {
        self.try_pg_ctl(action).unwrap_or_else(|e| panic!("{e}"));
    }

    /// `pg_ctl <action>`, answering the failure instead of panicking.
    pub(crate) fn try_pg_ctl(&self, action: &str) -> Result<(), String> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.log().display().to_string();
        let data = self.data();
        let mut args = vec![action, "-D", data.as_str(), "-w", "-o", options.as_str()];
        if action != "stop" {
            args.extend(["-l", log.as_str()]);
        }
        if action != "start" {
            args.extend(["-m", "fast"]);
        }
        self.run("pg_ctl", &args)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let args = ["stop", "-D", data.as_str(), "-m", "immediate", "-w"];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
