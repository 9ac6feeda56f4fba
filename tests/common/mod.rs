//! Shared by the tests that drive the `jobforge-server` binary over HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The server binary with `args`, on the in-memory backend whatever the environment says.
#[allow(dead_code)] // only some of the test files spawn it directly
pub(crate) fn command(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobforge-server"));
    cmd.args(args)
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    cmd
}

/// A running server (killed on drop) and its base URL, `http://127.0.0.1:<port>`.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the server on a free loopback port with the demo kinds and `extra` flags, and read
/// the address from the line it prints when listening.
pub(crate) fn spawn<S: AsRef<str>>(extra: &[S]) -> Spawned {
    let mut args = vec![
        "--bind".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--demo-handlers".to_owned(),
    ];
    args.extend(extra.iter().map(|a| a.as_ref().to_owned()));
    let mut child = command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn jobforge-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Spawned { child, base }
}
