//! `sm-ssh-bench`: measures sm-ssh and its peers against the fake AWS and
//! writes docs/benchmarks.md and its charts. Not part of the test suite.
//!
//! Run everything (about 12 minutes on two cores once built):
//!     cargo run --release -p sm-ssh-bench -- --all

mod charts;
mod cp;
mod cpu_of;
mod fixture;
mod machine;
mod measure;
mod network;
mod peers;
mod procfs;
mod report;
mod results;
mod runner;
mod stats;
mod tcp;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use sm_ssh_integration::world::Pacing;

use crate::fixture::{Fixture, INSTANCE};
use crate::measure::{Plan, SetupCase, Tools, BRIDGE, SM_SSH};
use crate::results::Results;

#[derive(Debug, Parser)]
#[command(
    name = "sm-ssh-bench",
    about = "Benchmarks sm-ssh and its peers against the fake AWS"
)]
struct Args {
    /// Run every part (the default when no --only is given).
    #[arg(long)]
    all: bool,
    /// Run only these parts.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Small transfers and two runs each: a smoke test of the harness, not figures to publish.
    #[arg(long)]
    quick: bool,
    /// Measure sm-ssh alone, without installing or running the peers.
    #[arg(long)]
    no_peers: bool,
    /// Regenerate the report and charts from a saved results file, measuring nothing.
    #[arg(long, value_name = "RESULTS_JSON")]
    render_only: Option<PathBuf>,
    /// The file `cp` copies, in MiB (default 64; 4 with --quick).
    #[arg(long, value_name = "MIB")]
    cp_mib: Option<u64>,
    /// Run the cp part behind the TLS endpoints and delaying relays at this
    /// round-trip time (default: the fake's plain loopback port).
    #[arg(long, value_name = "MS")]
    cp_rtt_ms: Option<u64>,
    /// Run the cp part with only these session counts, without its side
    /// rows (scp, the SSH document, cuts): a by-hand look at one count.
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    cp_sessions: Vec<u16>,
    /// Run the cp part with the service's ceiling at this many messages per
    /// second each way instead of 1000 (the agent keeps its 1024-byte reads
    /// and 1 ms pause): by hand, to see what the ceiling, which counts acks,
    /// costs a copy.
    #[arg(long, value_name = "PER_SECOND")]
    cp_ceiling: Option<u32>,
    /// Measure this sm-ssh binary instead of building the workspace's in
    /// release mode (a portable build, a before/after comparison).
    #[arg(long, value_name = "PATH")]
    sm_ssh: Option<PathBuf>,
    /// The report to update (only its generated block is replaced).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Setup latency, with the Python helper and the AWS CLI beside sm-ssh.
    Setup,
    /// Throughput, loss and cost.
    Throughput,
    /// `forward --sessions N`.
    Parallel,
    /// Websocket cuts.
    Reconnect,
    /// `sm-ssh cp` over 1 to 16 sessions, scp through one session, and under cuts.
    Cp,
}

fn main() -> anyhow::Result<()> {
    // The harness runs itself as `cpu-of COMMAND…` around each copy it measures.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "cpu-of") {
        cpu_of::run(&argv[2..]);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = workspace_root()?;
    let out = root.join(&args.out);
    if let Some(path) = &args.render_only {
        let results: Results = serde_json::from_str(
            &std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        )?;
        return publish(&root, &out, &results);
    }
    let parts = if args.all || args.only.is_empty() {
        vec![
            Part::Setup,
            Part::Throughput,
            Part::Parallel,
            Part::Reconnect,
            Part::Cp,
        ]
    } else {
        args.only.clone()
    };
    let started = Instant::now();
    let plan = if args.quick {
        Plan {
            setup_runs: 2,
            transfer_runs: 2,
            realistic_bytes: 512 << 10,
            unconstrained_bytes: 16 << 20,
            parallel_bytes: 256 << 10,
            reconnect_bytes: 2 << 20,
            cut_every_ms: 700,
        }
    } else {
        Plan {
            setup_runs: 7,
            transfer_runs: 3,
            realistic_bytes: 2 << 20,
            unconstrained_bytes: 128 << 20,
            parallel_bytes: 2 << 20,
            reconnect_bytes: 4 << 20,
            cut_every_ms: 1000,
        }
    };
    let mut results = Results {
        machine: Some(machine::Machine::detect()),
        command: std::iter::once("cargo run --release -p sm-ssh-bench --".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        date: date(),
        ..Results::default()
    };

    let sm_ssh = match &args.sm_ssh {
        Some(path) => std::path::absolute(path)?,
        None => build_sm_ssh(&root)?,
    };
    let tools = Tools {
        sm_ssh,
        bridge: if args.no_peers {
            None
        } else {
            eprintln!("sm-ssh-bench: building the aws-ssm-bridge peer (release)");
            peers::build_bridge(&root)
                .map_err(|e| results.note(BRIDGE, "every measurement", format!("{e:#}")))
                .ok()
        },
    };
    let mut fx = Fixture::start().await?;

    if parts.contains(&Part::Setup) {
        let cases = setup_cases(&root, &mut fx, &tools, &args, &mut results);
        let _keep_alive = cases.1;
        let net = network::Network::start(fx.fake.addr(), fx.home()).await?;
        fx.enter(&net);
        measure::setup(&fx, &net, &cases.0, plan, &mut results).await;
        fx.leave();
    }
    let mut transfer_tools = vec![SM_SSH];
    if tools.bridge.is_some() {
        transfer_tools.push(BRIDGE);
    }
    if parts.contains(&Part::Throughput) {
        for tool in &transfer_tools {
            measure::throughput_and_loss(&fx, &tools, tool, plan, &mut results).await;
        }
        measure::proxy_cost(&fx, &tools, plan, &mut results).await;
    }
    if parts.contains(&Part::Parallel) {
        measure::parallel(&fx, &tools, plan, &mut results).await;
    }
    if parts.contains(&Part::Reconnect) {
        for tool in &transfer_tools {
            measure::reconnect(&fx, &tools, tool, plan, &mut results).await;
        }
    }
    if parts.contains(&Part::Cp) {
        let mib = args.cp_mib.unwrap_or(if args.quick { 4 } else { 64 });
        let net = match args.cp_rtt_ms {
            Some(ms) => {
                let net = network::Network::start(fx.fake.addr(), fx.home()).await?;
                net.rtt.set(std::time::Duration::from_millis(ms));
                fx.enter(&net);
                Some(net)
            }
            None => None,
        };
        let pacing = match args.cp_ceiling {
            Some(messages_per_second) => Pacing::Ceiling {
                messages_per_second,
            },
            None => Pacing::Realistic,
        };
        let copies = cp::Copies {
            bytes: mib << 20,
            only: &args.cp_sessions,
            pacing,
        };
        cp::cp(&fx, &tools, &copies, &mut results).await;
        if net.is_some() {
            fx.leave();
        }
    }
    results.wall_seconds = started.elapsed().as_secs_f64();
    publish(&root, &out, &results)
}

/// Builds sm-ssh in release mode; returns the binary.
fn build_sm_ssh(root: &Path) -> anyhow::Result<PathBuf> {
    eprintln!("sm-ssh-bench: building sm-ssh (release)");
    let status = std::process::Command::new("cargo")
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "sm-ssh",
            "--bin",
            "sm-ssh",
        ])
        .current_dir(root)
        .status()?;
    anyhow::ensure!(status.success(), "cargo build --release -p sm-ssh failed");
    Ok(fixture::release_dir(root).join("sm-ssh"))
}

/// What stays alive while the setup cases run (sshd, moto).
type Keep = (
    Option<sm_ssh_integration::openssh::OpenSshServer>,
    Option<sm_ssh_integration::moto::MotoServer>,
);

fn setup_cases(
    root: &Path,
    fx: &mut Fixture,
    tools: &Tools,
    args: &Args,
    results: &mut Results,
) -> (Vec<SetupCase>, Keep) {
    let fqdn = fixture::fqdn();
    let mut cases = Vec::new();
    let sm = tools.sm_ssh.clone();
    let (f, s) = (fqdn.clone(), sm.clone());
    cases.push(SetupCase {
        tool: SM_SSH.into(),
        scenario: "proxy <fqdn> → banner".into(),
        until_exit: false,
        make: Box::new(move |fx| {
            let mut c = fx.command(&s);
            c.args(["proxy", &f]);
            c
        }),
    });
    let s = sm.clone();
    cases.push(SetupCase {
        tool: SM_SSH.into(),
        scenario: "proxy mi-… → banner".into(),
        until_exit: false,
        make: Box::new(move |fx| {
            let mut c = fx.command(&s);
            c.args(["proxy", INSTANCE]);
            c
        }),
    });
    let mut keep: Keep = (None, None);
    match fx.add_openssh_instance(&sm) {
        Ok((sshd, config)) => {
            keep.0 = Some(sshd);
            let host = format!("{}.training.sagemaker", fixture::SSH_JOB);
            cases.push(SetupCase {
                tool: SM_SSH.into(),
                scenario: "ssh <fqdn> true (OpenSSH)".into(),
                until_exit: true,
                make: Box::new({
                    let host = host.clone();
                    move |fx| {
                        let mut c = fx.command("ssh");
                        c.arg("-F").arg(&config).args([&host, "true"]);
                        c
                    }
                }),
            });
            let s = sm.clone();
            let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
            cases.push(SetupCase {
                tool: SM_SSH.into(),
                scenario: "connect <fqdn> true (OpenSSH)".into(),
                until_exit: true,
                make: Box::new(move |fx| {
                    let mut c = fx.command(&s);
                    c.args(["connect", "--user", &user, &host, "true"]);
                    c
                }),
            });
        }
        Err(e) => results.note(SM_SSH, "ssh <fqdn> true", format!("no sshd: {e:#}")),
    }
    if let Some(bridge) = tools.bridge.clone() {
        cases.push(SetupCase {
            tool: BRIDGE.into(),
            scenario: "ssh mi-… → banner".into(),
            until_exit: false,
            make: Box::new(move |fx| {
                let mut c = fx.command(&bridge);
                c.args(["ssh", INSTANCE]);
                c
            }),
        });
    }
    if args.no_peers {
        return (cases, keep);
    }
    let venv = match peers::install_python(root) {
        Ok(v) => v,
        Err(e) => {
            results.note("sagemaker-ssh-helper 2.3.0", "setup", format!("{e:#}"));
            results.note("AWS CLI v1", "setup", format!("{e:#}"));
            return (cases, keep);
        }
    };
    match peers::plugin_dir(&sm, fx.home()) {
        Ok(plugin_dir) => {
            let aws = venv.join("aws");
            cases.push(SetupCase {
                tool: "AWS CLI v1 + sm-ssh plugin".into(),
                scenario: "start-session AWS-StartSSHSession → banner".into(),
                until_exit: false,
                make: Box::new(move |fx| {
                    let mut c = fx.command(&aws);
                    let path = std::env::var("PATH").unwrap_or_default();
                    c.env("PATH", format!("{}:{path}", plugin_dir.display()));
                    c.args([
                        "ssm",
                        "start-session",
                        "--target",
                        INSTANCE,
                        "--document-name",
                        "AWS-StartSSHSession",
                        "--parameters",
                        "portNumber=22",
                    ]);
                    c
                }),
            });
        }
        Err(e) => results.note("AWS CLI v1", "setup", format!("{e:#}")),
    }
    let python = venv.join("python");
    cases.push(SetupCase {
        tool: "sagemaker-ssh-helper 2.3.0".into(),
        scenario: "resolve <fqdn> to mi-… (Python)".into(),
        until_exit: true,
        make: Box::new(move |fx| {
            let mut c = fx.command(&python);
            c.args([
                "-c",
                "from sagemaker_ssh_helper.manager import SSMManager; \
                 print(SSMManager().get_training_instance_ids('bench-job', 0)[0])",
            ]);
            c
        }),
    });
    // `list` also asks SageMaker, IAM and Logs, which moto answers (directly,
    // not through the harness's network).
    let moto = peers::moto_server(root).and_then(|path| {
        std::env::set_var(sm_ssh_integration::moto::MOTO_ENV, path);
        sm_ssh_integration::moto::MotoServer::start()
    });
    match moto {
        Ok(moto) => {
            let on_moto: Vec<(String, String)> = ["SAGEMAKER", "CLOUDWATCH_LOGS", "IAM"]
                .iter()
                .map(|service| (format!("AWS_ENDPOINT_URL_{service}"), moto.endpoint()))
                .collect();
            keep.1 = Some(moto);
            let s = sm.clone();
            let env = on_moto.clone();
            cases.push(SetupCase {
                tool: SM_SSH.into(),
                scenario: "list".into(),
                until_exit: true,
                make: Box::new(move |fx| {
                    let mut c = fx.command(&s);
                    c.envs(env.iter().map(|(k, v)| (k, v))).arg("list");
                    c
                }),
            });
            // Its plain `list` also calls SageMaker ListApps, which moto lacks
            // (HTTP 500); the training-job listing runs on moto.
            let helper = venv.join("sm-ssh");
            cases.push(SetupCase {
                tool: "sagemaker-ssh-helper 2.3.0".into(),
                scenario: "list training.sagemaker".into(),
                until_exit: true,
                make: Box::new(move |fx| {
                    let mut c = fx.command(&helper);
                    c.envs(on_moto.iter().map(|(k, v)| (k, v)))
                        .args(["list", "training.sagemaker"]);
                    c
                }),
            });
            results.note(
                "sagemaker-ssh-helper 2.3.0",
                "plain `list` (all kinds)",
                "it calls SageMaker ListApps, which moto 5 does not implement (HTTP 500); \
                 `list training.sagemaker` is measured instead",
            );
        }
        Err(e) => results.note(
            "sm-ssh and sagemaker-ssh-helper",
            "list",
            format!("no moto: {e:#}"),
        ),
    }
    (cases, keep)
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Writes the report, its charts and the raw results.
fn publish(root: &Path, out: &Path, results: &Results) -> anyhow::Result<()> {
    let dir = root.join("docs/benchmarks");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    draw_charts(&dir, results)?;
    report::write(out, results)?;
    eprintln!("sm-ssh-bench: wrote {}", out.display());
    Ok(())
}

fn draw_charts(dir: &Path, r: &Results) -> anyhow::Result<()> {
    use charts::Series;
    let mut loss: Vec<Series> = Vec::new();
    for l in &r.loss {
        let label = format!("{} {}", l.tool, l.direction.name());
        match loss.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((l.loss_pct, l.mb_s.median)),
            None => loss.push(Series {
                label,
                points: vec![(l.loss_pct, l.mb_s.median)],
            }),
        }
    }
    if !loss.is_empty() {
        charts::line_chart(
            &dir.join("throughput-vs-loss.svg"),
            "Throughput vs frame loss (realistic pacing)",
            ("frames dropped per direction (%)", "MB/s (median)"),
            &loss,
            false,
            charts::Layout {
                legend: plotters::chart::SeriesLabelPosition::MiddleRight,
                x_room: 1.05,
            },
        )?;
    }
    let mut setup: Vec<Series> = Vec::new();
    for s in &r.setup {
        let label = format!("{}: {} ({})", s.tool, s.scenario, s.cache.name());
        let point = (s.rtt_ms as f64, s.wall_ms.median);
        match setup.iter_mut().find(|x| x.label == label) {
            Some(x) => x.points.push(point),
            None => setup.push(Series {
                label,
                points: vec![point],
            }),
        }
    }
    if !setup.is_empty() {
        charts::line_chart(
            &dir.join("setup-latency.svg"),
            "Setup time vs network round-trip time (TLS endpoints behind delaying relays)",
            (
                "round-trip time (ms)",
                "ms to banner / to exit (median, log)",
            ),
            &setup,
            true,
            // Two x values (0 and 30 ms): the legend takes the right half.
            charts::Layout {
                legend: plotters::chart::SeriesLabelPosition::LowerRight,
                x_room: 3.0,
            },
        )?;
    }
    Ok(())
}

/// The workspace root: where this crate's parent manifest is.
fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("bench/ has no parent directory")?
        .to_path_buf())
}
