//! Poll with no new commit against a local `git http-backend` (basic auth): wall time per poll and
//! CPU time of the polling thread per poll, plus the requests one poll makes. Prints figures.

#[path = "../tests/e2e/fixture.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "../tests/e2e/http_server.rs"]
#[allow(dead_code)]
mod http_server;

use std::time::{Duration, Instant};

use vixen_git::{Auth, GitRef, GitSource, GitSourceConfig, Secret};

/// Nanoseconds this thread has run on a CPU (Linux schedstat).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

fn main() {
    let n: usize = std::env::var("POLLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let remote = fixture::Remote::new();
    let files: Vec<(String, String)> = (0..200)
        .map(|i| (format!("nodes/n{i}.yaml"), format!("node: {i}\n")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let head = remote.commit(&refs, "a", None);
    let server = http_server::GitHttpServer::start(remote.bare.parent().unwrap(), "u", "p");
    let cfg = GitSourceConfig {
        url: server.url("repo.git"),
        reference: GitRef::Branch("main".into()),
        sub_path: None,
        auth: Auth::Basic {
            username: "u".into(),
            password: Secret::new("p"),
        },
        cache_dir: remote.dir.path().join("cache"),
        signatures: None,
    };
    let mut src = GitSource::new(&cfg).unwrap();
    let t = Instant::now();
    let co = src.fetch().unwrap();
    println!(
        "first fetch (200 files): {:?}, {} objects, {} bytes",
        t.elapsed(),
        co.received_objects,
        co.received_bytes
    );
    for _ in 0..3 {
        src.poll().unwrap();
    }
    server.take_log();
    let mut walls = Vec::with_capacity(n);
    let cpu0 = thread_cpu();
    for _ in 0..n {
        let t = Instant::now();
        assert_eq!(src.poll().unwrap().commit, head);
        walls.push(t.elapsed());
    }
    let cpu = thread_cpu() - cpu0;
    let log = server.take_log();
    walls.sort();
    let mean = walls.iter().sum::<Duration>() / n as u32;
    println!("poll, no new commit ({n} polls over HTTP with basic auth on 127.0.0.1):");
    println!(
        "  wall per poll: mean {:?}, p50 {:?}, p95 {:?}",
        mean,
        walls[n / 2],
        walls[n * 95 / 100]
    );
    println!("  CPU of the polling thread per poll: {:?}", cpu / n as u32);
    println!(
        "  HTTP requests per poll: {} (GET info/refs, incl. the 401 challenge); upload-pack POSTs: {}",
        log.len() as f64 / n as f64,
        log.iter().filter(|r| r.method == "POST").count()
    );
    let t = Instant::now();
    let co = src.fetch().unwrap();
    println!(
        "fetch, no new commit: {:?}, {} objects received",
        t.elapsed(),
        co.received_objects
    );
}
