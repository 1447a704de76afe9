//! `vixen lab ...`: start, stop, inspect and fault the lab of simulated Talos nodes. `up` starts a
//! background `vixen lab serve` and returns once every node listens.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use vixen_lab::{Control, LabSpec, LabStatus};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Start the lab in the background: one simulated node per node, in maintenance mode.
    Up {
        /// A cluster repo: one node per node of the repo.
        #[arg(long, conflicts_with = "spec", required_unless_present = "spec")]
        repo: Option<PathBuf>,
        /// A lab spec (JSON: {"nodes": [{name, role, maintenance_address, talos_version}]}).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Lab directory: lab.json, calls.jsonl, logs and node state.
        #[arg(long)]
        dir: PathBuf,
        /// How long a reboot keeps a node unreachable.
        #[arg(long, default_value_t = 2000)]
        reboot_ms: u64,
        /// Run a real kube-apiserver on the lab's etcd once a control plane is bootstrapped
        /// (the test peer built by tests/peers/build.sh); the Kubeconfig RPC then points at it.
        #[arg(long)]
        kube: bool,
        /// The kube-apiserver binary for --kube (default: the built test peer).
        #[arg(long, requires = "kube")]
        kube_apiserver: Option<PathBuf>,
        /// Stop the lab when this process exits (tests pass their own PID).
        #[arg(long, value_name = "PID")]
        die_with: Option<u32>,
    },
    /// Run the lab in the foreground (what `up` starts in the background).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2000)]
        reboot_ms: u64,
        #[arg(long)]
        kube_apiserver: Option<PathBuf>,
        #[arg(long)]
        die_with: Option<u32>,
    },
    /// Stop the lab and every process it started.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the node table.
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Inject a fault: down | up | slow-reboot MS | fail-next-upgrade | addr-down ADDR.
    Fault {
        #[arg(long)]
        dir: PathBuf,
        /// Node name.
        node: String,
        /// The fault and its argument.
        #[arg(required = true, num_args = 1..=2)]
        fault: Vec<String>,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up {
            repo,
            spec,
            dir,
            reboot_ms,
            kube,
            kube_apiserver,
            die_with,
        } => {
            let spec = match (repo, spec) {
                (Some(repo), _) => super::lab_spec_for_repo(&repo)?,
                (None, Some(file)) => LabSpec::load(&file)?,
                (None, None) => bail!("--repo or --spec is required"),
            };
            let apiserver = match (kube, kube_apiserver) {
                (false, _) => None,
                (true, Some(path)) => Some(path.canonicalize().with_context(|| path.display().to_string())?),
                (true, None) => Some(vixen_lab::peers::binary("kube-apiserver").context(
                    "--kube: kube-apiserver is not built (bash tests/peers/build.sh, or --kube-apiserver PATH)",
                )?),
            };
            up(&spec, &dir, reboot_ms, apiserver.as_deref(), die_with)?;
            print_status(&dir)?;
        }
        Command::Serve {
            dir,
            reboot_ms,
            kube_apiserver,
            die_with,
        } => {
            let kube = kube_apiserver.map(|apiserver| vixen_lab::KubeOptions { apiserver });
            vixen_lab::serve_blocking(&dir, reboot_ms, kube, die_with)?;
        }
        Command::Down { dir } => down(&dir)?,
        Command::Status { dir } => print_status(&dir)?,
        Command::Fault { dir, node, fault } => {
            let reply = vixen_lab::send_control(
                &dir,
                &Control::Fault {
                    node,
                    fault: fault.join(" "),
                },
            )?;
            if !reply.ok {
                bail!("{}", reply.error.unwrap_or_default());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn up(
    spec: &LabSpec,
    dir: &Path,
    reboot_ms: u64,
    kube_apiserver: Option<&Path>,
    die_with: Option<u32>,
) -> anyhow::Result<()> {
    spec.validate()?;
    if vixen_lab::control_socket(dir).exists() && vixen_lab::ready_file(dir).exists() {
        bail!(
            "a lab already runs in {} (vixen lab down --dir first)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let dir = dir.canonicalize()?;
    spec.save(&dir.join("spec.json"))?;
    let _ = std::fs::remove_file(vixen_lab::ready_file(&dir));
    let log = std::fs::File::create(dir.join("lab.log"))?;
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child
        .args(["lab", "serve", "--dir"])
        .arg(&dir)
        .args(["--reboot-ms", &reboot_ms.to_string()]);
    if let Some(path) = kube_apiserver {
        child.arg("--kube-apiserver").arg(path);
    }
    if let Some(pid) = die_with {
        child.args(["--die-with", &pid.to_string()]);
    }
    child
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own process group: the daemon outlives this command and its terminal's signals.
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    let mut child = child.spawn().context("starting vixen lab serve")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !vixen_lab::ready_file(&dir).exists() {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("lab.log")).unwrap_or_default();
            bail!("the lab exited ({status}):\n{log}");
        }
        if Instant::now() > deadline {
            bail!(
                "the lab did not start within 60 s (see {}/lab.log)",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let pid = std::fs::read_to_string(vixen_lab::ready_file(dir)).ok();
    vixen_lab::send_control(dir, &Control::Down).context("is the lab running?")?;
    if let Some(pid) = pid.map(|p| p.trim().to_string()) {
        let proc = PathBuf::from("/proc").join(pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        while proc.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

fn print_status(dir: &Path) -> anyhow::Result<()> {
    let status = LabStatus::load(dir)?;
    if let Some(api) = &status.kube_api {
        println!("kube-apiserver: {api} (kubeconfig: the Kubeconfig RPC of a control plane)");
    }
    println!(
        "{:<12} {:<13} {:<16} {:<16} {:<12} {:<10} ETCD",
        "NAME", "ROLE", "MAINTENANCE", "CURRENT", "MODE", "VERSION"
    );
    for n in status.nodes {
        println!(
            "{:<12} {:<13} {:<16} {:<16} {:<12} {:<10} {}",
            n.name,
            n.role,
            n.maintenance_address,
            n.current_address,
            n.mode,
            n.talos_version,
            n.etcd_client_url.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
