//! HTTP submission throughput and latency: `POST /v1/jobs` over keep-alive connections to the
//! router on the in-memory backend, with workers running the jobs in the same process.
//!
//! ```text
//! cargo run --release --features http --example http_load
//! cargo run --release --features http --example http_load -- --connections 64 --seconds 10 --no-workers
//! ```
//!
//! The load generator is a minimal HTTP/1.1 client on raw keep-alive TCP connections (one
//! request in flight per connection, like `wrk`), so it spends little of the machine's CPU
//! on itself; it prints submissions per second and latency percentiles. It only ever talks
//! to the server it started on 127.0.0.1, and stops after the given number of seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobforge::http::{HttpConfig, router};
use jobforge::prelude::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Options {
    connections: usize,
    seconds: u64,
    workers: bool,
}

fn options() -> Result<Options, Box<dyn std::error::Error>> {
    let mut o = Options {
        connections: 32,
        seconds: 10,
        workers: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--connections" => o.connections = args.next().ok_or("--connections N")?.parse()?,
            "--seconds" => o.seconds = args.next().ok_or("--seconds N")?.parse()?,
            "--no-workers" => o.workers = false,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    let orchestrator = Orchestrator::builder()
        .handler("echo", |ctx: JobContext| async move {
            Ok(ctx.payload().to_value()?)
        })
        .build()?;
    let workers = if o.workers {
        Some(orchestrator.start_workers(WorkerConfig::default().concurrency(64))?)
    } else {
        None
    };
    let config = HttpConfig::default()
        .with_memory(Arc::clone(orchestrator.memory()))
        .with_known_kinds(["echo"]);
    let app = router(Arc::new(orchestrator.clone()), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let body =
        serde_json::to_vec(&json!({"kind": "echo", "payload": {"user": 42, "action": "welcome"}}))?;
    let request = [
        format!(
            "POST /v1/jobs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body,
    ]
    .concat();
    let request = Arc::new(request);
    let warmup = Duration::from_secs(1);
    let started = Instant::now();
    let measure_from = started + warmup;
    let stop_at = measure_from + Duration::from_secs(o.seconds);

    let mut tasks = Vec::new();
    for _ in 0..o.connections {
        let request = Arc::clone(&request);
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let now = Instant::now();
                if now >= stop_at {
                    break;
                }
                stream.write_all(&request).await?;
                let status = read_response(&mut stream, &mut buf).await?;
                if now >= measure_from {
                    latencies.push(u32::try_from(now.elapsed().as_micros()).unwrap_or(u32::MAX));
                    if status != 201 {
                        errors += 1;
                    }
                }
            }
            Ok::<_, std::io::Error>((latencies, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await??;
        all.extend(latencies);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len().max(1)) - 1;
        f64::from(all.get(i).copied().unwrap_or(0)) / 1000.0
    };
    println!(
        "POST /v1/jobs, {} keep-alive connections, {} s, workers {}: {} submissions, {:.0}/s, {} non-201; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        o.connections,
        o.seconds,
        if o.workers { "on" } else { "off" },
        all.len(),
        all.len() as f64 / o.seconds as f64,
        errors,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
    );
    if let Some(workers) = workers {
        orchestrator.wait_idle(Duration::from_secs(60)).await?;
        let stats = orchestrator.stats().await?;
        println!(
            "workers finished every job: {} succeeded",
            stats.jobs.total.succeeded
        );
        workers.shutdown(Duration::from_secs(5)).await;
    }
    if errors > 0 {
        return Err(format!("{errors} submissions were not answered 201").into());
    }
    Ok(())
}

/// Read one HTTP/1.1 response (headers plus a `content-length` body); answer its status.
async fn read_response(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<u16> {
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        filled += n;
        let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") else {
            if filled == buf.len() {
                return Err(std::io::Error::other("headers too long"));
            }
            continue;
        };
        let head = std::str::from_utf8(&buf[..end]).map_err(std::io::Error::other)?;
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let total = end + 4 + length;
        if total > buf.len() {
            return Err(std::io::Error::other("response too long"));
        }
        while filled < total {
            let n = stream.read(&mut buf[filled..total]).await?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            filled += n;
        }
        return Ok(status);
    }
}
