//! A `redis-server` of a test's own on a spare port (never the shared one), killed when
//! dropped. Shared by `tests/redis.rs` and the chaos suite (`tests/chaos/`), each including
//! this file with `#[path]`.
#![allow(dead_code)] // each includer uses part of it

use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) struct PrivateRedis {
    port: u16,
    /// With persistence: the folder of the append-only file (`appendfsync always`).
    aof_dir: Option<PathBuf>,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub(crate) fn spare_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a spare port")
    }

    /// A server without persistence: what it holds is lost when it stops. Panics if it
    /// cannot start.
    pub(crate) fn start(port: u16) -> Self {
        Self::try_start(port).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `start`, answering a failure instead of panicking.
    pub(crate) fn try_start(port: u16) -> Result<Self, String> {
        Self::launch(port, None)
    }

    /// A server with an append-only file in `dir`, synced at every write
    /// (`--appendonly yes --appendfsync always`): started again on the same port and folder,
    /// it has everything it acknowledged.
    pub(crate) fn start_durable(port: u16, dir: &Path) -> Result<Self, String> {
        Self::launch(port, Some(dir))
    }

    fn launch(port: u16, aof_dir: Option<&Path>) -> Result<Self, String> {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
        ]);
        match aof_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("create {}: {e}", dir.display()))?;
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server ({e}); install it (.ci/run does)"))?;
        let mut server = Self {
            port,
            aof_dir: aof_dir.map(Path::to_path_buf),
            child: Some(child),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "redis-server on port {port} exited at start: {status}"
                ));
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("redis-server did not start on {port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `SHUTDOWN NOSAVE`: everything it held is lost.
    pub(crate) async fn shutdown_nosave(&mut self) {
        self.shutdown_with(&["NOSAVE"]).await;
    }

    /// `SHUTDOWN`: with an append-only file, it is synced first; a server started again on
    /// the same port and folder has everything.
    pub(crate) async fn shutdown(&mut self) {
        self.shutdown_with(&[]).await;
    }

    async fn shutdown_with(&mut self, args: &[&str]) {
        if let Ok(mut conn) = redis::Client::open(self.url().as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
        {
            let _ = redis::cmd("SHUTDOWN")
                .arg(args)
                .query_async::<redis::Value>(&mut conn)
                .await;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
