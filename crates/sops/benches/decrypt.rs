//! Decrypting a 10,000-value YAML file: vixen (in process) against `sops decrypt` (a
//! process per run, as a user or Flux would call it). Prints both medians and the ratio.
//! Needs `sops` and `age-keygen` on PATH; without them it says so and measures nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use vixen_sops::{Format, Keyring};

const VALUES: usize = 10_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let sops_ok = Command::new("sops")
        .arg("--version")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .output()
        .is_ok_and(|o| o.status.success());
    if !sops_ok {
        eprintln!("!!! benchmark skipped: `sops` is not on PATH !!!");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.txt");
    assert!(
        Command::new("age-keygen")
            .arg("-o")
            .arg(&key)
            .output()
            .expect("age-keygen")
            .status
            .success()
    );
    let recipient = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .unwrap();

    // 1,000 services of 10 values each (the values sops encrypts, one ENC[...] each): strings,
    // ints, bools, a float, a list of two.
    let mut doc = String::from("# generated for the benchmark\nservices:\n");
    for i in 0..VALUES / 10 {
        doc.push_str(&format!(
            "  svc{i}:\n    user: user{i}\n    password: p@ss-{i}-word\n    port: {}\n    enabled: {}\n    ratio: {}.5\n    token: tok_{i}_abcdefghijklmnop\n    region: r{}\n    hosts:\n      - h{i}a.example.invalid\n      - h{i}b.example.invalid\n    note: \"multi\\nline {i}\"\n",
            1000 + i, i % 2 == 0, i, i % 7
        ));
    }
    let plain = dir.path().join("big.yaml");
    std::fs::write(&plain, &doc).unwrap();
    let sops = |args: &[&str]| {
        let mut cmd = Command::new("sops");
        cmd.env("SOPS_DISABLE_VERSION_CHECK", "1")
            .env("SOPS_AGE_KEY_FILE", &key)
            .args(args);
        cmd
    };
    let out = sops(&["encrypt", "--age", &recipient, plain.to_str().unwrap()])
        .output()
        .expect("sops encrypt");
    assert!(out.status.success());
    let enc_path = dir.path().join("big.enc.yaml");
    std::fs::write(&enc_path, &out.stdout).unwrap();
    // The file holds what its name says: one encrypted value per leaf, `VALUES` of them
    // (the `sops:` metadata's own `ENC[` is the MAC, after the last value; sops encrypts the
    // comment too, as `#ENC[...]`, which is no value).
    let text = String::from_utf8_lossy(&out.stdout);
    let body = text.split("\nsops:").next().unwrap_or_default();
    let values = body
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.matches("ENC[AES256_GCM,").count())
        .sum::<usize>();
    assert_eq!(values, VALUES, "encrypted values");
    let enc = out.stdout;
    let keys = Keyring::from_file(&key).unwrap();

    let reference = sops(&["decrypt", enc_path.to_str().unwrap()])
        .output()
        .unwrap()
        .stdout;
    let ours = vixen_sops::decrypt(&enc, Format::Yaml, &keys).expect("vixen decrypts");
    assert_eq!(ours.as_bytes(), reference.as_slice(), "outputs differ");

    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    c.bench_function("vixen decrypt 10k-value yaml", |b| {
        b.iter(|| vixen_sops::decrypt(std::hint::black_box(&enc), Format::Yaml, &keys).unwrap())
    });

    let runs = 5;
    let vixen: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            vixen_sops::decrypt(&enc, Format::Yaml, &keys).unwrap();
            t.elapsed()
        })
        .collect();
    let sops_times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let o = sops(&["decrypt", enc_path.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(o.status.success());
            t.elapsed()
        })
        .collect();
    let (v, s) = (median(vixen), median(sops_times));
    println!(
        "\n{VALUES} values, {} bytes encrypted: vixen {:.1} ms (in process, no process start), sops decrypt {:.1} ms (a whole process), sops/vixen = {:.2}x\n(whole process against whole process: `vixen decrypt FILE` against `sops decrypt FILE`, e.g. under /usr/bin/time)\n",
        enc.len(),
        v.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        s.as_secs_f64() / v.as_secs_f64()
    );
    c.final_summary();
}
