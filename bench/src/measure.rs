//! The measurements: each runs one tool under one set of conditions and
//! appends its rows to `Results`, or notes why it could not.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sm_ssh_integration::world::{DirectionFaults, Faults, Pacing};
use tokio::process::Command;

use crate::fixture::{self, Fixture, INSTANCE, TARGET_PORT};
use crate::network::Network;
use crate::results::{
    Cache, CostRow, LossRow, NetworkRow, ParallelRow, ReconnectRow, Results, SetupRow,
    ThroughputRow,
};
use crate::runner::{self, Forwarder};
use crate::stats::Summary;
use crate::tcp::{self, Direction};

pub const SM_SSH: &str = "sm-ssh";
pub const BRIDGE: &str = "aws-ssm-bridge 0.6.0";

/// The programs under test; a peer is `None` when it could not be installed.
pub struct Tools {
    pub sm_ssh: PathBuf,
    pub bridge: Option<PathBuf>,
}

/// How much to move and how often.
#[derive(Clone, Copy)]
pub struct Plan {
    pub setup_runs: usize,
    pub transfer_runs: usize,
    pub realistic_bytes: u64,
    pub unconstrained_bytes: u64,
    pub parallel_bytes: u64,
    pub reconnect_bytes: u64,
    pub cut_every_ms: u64,
}

const DIRECTIONS: [Direction; 2] = [Direction::Upload, Direction::Download];

fn faults(drop: f64, cut_every_ms: Option<u64>) -> Faults {
    let direction = DirectionFaults {
        drop,
        ..DirectionFaults::default()
    };
    Faults {
        seed: 7,
        to_agent: direction.clone(),
        to_client: direction,
        cut_every_ms,
        ..Faults::default()
    }
}

// ---------------------------------------------------------------- setup

/// One setup scenario: a command whose first stdout byte (or exit) ends the clock.
pub struct SetupCase {
    pub tool: String,
    pub scenario: String,
    pub until_exit: bool,
    pub make: Box<dyn Fn(&Fixture) -> Command + Send + Sync>,
}

/// The round-trip times setup is measured at: none (the processes' own
/// floor, through the same TLS endpoints) and a realistic one.
pub const RTTS_MS: [u64; 2] = [0, RTT_MS];
/// The realistic RTT: a client a few hundred kilometres from its region.
pub const RTT_MS: u64 = 30;

/// The network's check, then every case cold and warm at each RTT: each
/// sample is a cold run with a new, empty cache directory followed by a warm
/// run with the same directory. `fx` must be on `net` (`Fixture::enter`).
pub async fn setup(
    fx: &Fixture,
    net: &Network,
    cases: &[SetupCase],
    plan: Plan,
    results: &mut Results,
) {
    for rtt in RTTS_MS {
        net.rtt.set(Duration::from_millis(rtt));
        if let Err(e) = network_check(net, rtt, plan, results).await {
            results.note("the harness", "network check", format!("{e:#}"));
        }
    }
    fx.conditions(Pacing::Unconstrained, Faults::default());
    for case in cases {
        for rtt in RTTS_MS {
            net.rtt.set(Duration::from_millis(rtt));
            if let Err(e) = setup_case(fx, case, rtt, plan, results).await {
                results.note(&case.tool, &case.scenario, format!("{e:#}"));
                break;
            }
        }
    }
    net.rtt.set(Duration::ZERO);
    fx.conditions(Pacing::Realistic, Faults::default());
}

async fn network_check(
    net: &Network,
    rtt: u64,
    plan: Plan,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut steps: [(&str, u32, Vec<f64>); 4] = [
        ("TCP connect, then 1 byte echoed", 2, Vec::new()),
        ("1 byte echoed on the open connection", 1, Vec::new()),
        ("TCP connect and TLS 1.3 handshake", 2, Vec::new()),
        (
            "then one HTTPS request to its first response byte",
            1,
            Vec::new(),
        ),
    ];
    for _ in 0..plan.setup_runs {
        let c = net.check().await?;
        let times = [c.connect_and_echo, c.echo, c.tls_handshake, c.https_request];
        for (step, t) in steps.iter_mut().zip(times) {
            step.2.push(t.as_secs_f64() * 1e3);
        }
    }
    for (step, expected, samples) in steps {
        let wall_ms = Summary::of(&samples).expect("runs > 0");
        eprintln!("network: {rtt} ms RTT: {step}: {:.1} ms", wall_ms.median);
        results.network.push(NetworkRow {
            rtt_ms: rtt,
            step: step.into(),
            expected_rtts: expected,
            wall_ms,
        });
    }
    Ok(())
}

/// One cache state's wall ms, CPU ms and API calls per run.
type Samples = (Cache, Vec<f64>, Vec<f64>, Vec<f64>);

async fn setup_case(
    fx: &Fixture,
    case: &SetupCase,
    rtt: u64,
    plan: Plan,
    results: &mut Results,
) -> anyhow::Result<()> {
    // The warm-up pushes the key (kept in the data directory); not counted.
    let cache = fx.cache_dir()?;
    run_case(fx, case, cache.path()).await?;
    let mut samples: [Samples; 2] = [
        (Cache::Cold, Vec::new(), Vec::new(), Vec::new()),
        (Cache::Warm, Vec::new(), Vec::new(), Vec::new()),
    ];
    for _ in 0..plan.setup_runs {
        let cache = fx.cache_dir()?;
        for (kind, wall, cpu, calls) in samples.iter_mut() {
            if *kind == Cache::Cold {
                fx.forget_sm_ssh_cache()?;
            }
            let before = fx.api_calls();
            let t = run_case(fx, case, cache.path()).await?;
            wall.push(t.wall.as_secs_f64() * 1e3);
            if let Some(c) = t.cpu {
                cpu.push(c * 1e3);
            }
            calls.push((fx.api_calls() - before) as f64);
        }
    }
    for (cache, wall, cpu, calls) in samples {
        let wall_ms = Summary::of(&wall).expect("runs > 0");
        eprintln!(
            "setup: {} {} {rtt} ms RTT {}: {:.1} ms",
            case.tool,
            case.scenario,
            cache.name(),
            wall_ms.median
        );
        results.setup.push(SetupRow {
            tool: case.tool.clone(),
            scenario: case.scenario.clone(),
            rtt_ms: rtt,
            cache,
            wall_ms,
            cpu_ms: Summary::of(&cpu),
            api_calls: Summary::of(&calls).map(|s| s.median),
        });
    }
    Ok(())
}

async fn run_case(
    fx: &Fixture,
    case: &SetupCase,
    cache: &std::path::Path,
) -> anyhow::Result<runner::Timed> {
    let mut command = (case.make)(fx);
    command.env("XDG_CACHE_HOME", cache);
    if case.until_exit {
        Ok(runner::time_to_exit(command).await?.0)
    } else {
        runner::time_to_first_byte(command).await
    }
}

// ---------------------------------------------------------------- transfers

async fn start_forwarder(
    fx: &Fixture,
    tools: &Tools,
    tool: &str,
    sessions: usize,
    pacing: Pacing,
) -> anyhow::Result<Forwarder> {
    if tool == SM_SSH {
        let port = fixture::free_port()?;
        let mut command = fx.command(&tools.sm_ssh);
        if pacing == Pacing::Unconstrained {
            // Where the far side has no ceiling, measure the client itself.
            command.env("SM_SSH_MAX_RATE", "unlimited");
        }
        command.args([
            "forward",
            &fixture::fqdn(),
            "-L",
            &format!("{port}:localhost:{TARGET_PORT}"),
            "--sessions",
            &sessions.to_string(),
            "--document",
            "AWS-StartPortForwardingSession",
        ]);
        Forwarder::on_port(command, port).await
    } else {
        let program = tools
            .bridge
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the peer is not built"))?;
        let mut command = fx.command(program);
        command.args(["forward", INSTANCE, &TARGET_PORT.to_string()]);
        Forwarder::announcing(command).await
    }
}

/// What one forwarder did over a series of transfers.
struct Series {
    mb_s: Vec<(Direction, f64)>,
    /// Bytes per transfer in each direction.
    bytes: Vec<(Direction, u64)>,
    cpu_s_per_gb: Vec<f64>,
    core_fraction: Vec<f64>,
    peak_rss_mib: f64,
}

/// Starts a forwarder under `pacing`/`faults` and runs `runs` transfers in
/// each direction through it: `len` bytes each, or with unconstrained pacing
/// about [`UNCONSTRAINED_SECONDS`] worth (at most `len`), sized by an
/// uncounted probe transfer, so that a slow direction still finishes.
async fn series(
    fx: &Fixture,
    tools: &Tools,
    tool: &str,
    (pacing, faults): (Pacing, Faults),
    len: u64,
    runs: usize,
) -> anyhow::Result<Series> {
    fx.conditions(pacing, faults);
    let mut fwd = start_forwarder(fx, tools, tool, 1, pacing).await?;
    let mut out = Series {
        mb_s: Vec::new(),
        bytes: Vec::new(),
        cpu_s_per_gb: Vec::new(),
        core_fraction: Vec::new(),
        peak_rss_mib: f64::NAN,
    };
    let result = run_series(&mut fwd, pacing, len, runs, &mut out).await;
    out.peak_rss_mib = fwd.peak_rss_mib();
    let alive = fwd.check_alive();
    let stderr = fwd.stop().await;
    match result {
        Ok(()) => Ok(out),
        Err(e) if alive.is_err() => {
            Err(anyhow::anyhow!("{e:#}; the forwarder had exited: {stderr}"))
        }
        Err(e) => Err(e),
    }
}

const UNCONSTRAINED_SECONDS: f64 = 3.0;
const PROBE_BYTES: u64 = 2 << 20;

async fn run_series(
    fwd: &mut Forwarder,
    pacing: Pacing,
    len: u64,
    runs: usize,
    out: &mut Series,
) -> anyhow::Result<()> {
    let mut sizes = Vec::new();
    for d in DIRECTIONS {
        let size = if pacing == Pacing::Unconstrained {
            let probe = timed_transfer(fwd, d, PROBE_BYTES, PROBE_BYTES as f64 / 0.25e6).await?;
            let rate = PROBE_BYTES as f64 / probe.elapsed.as_secs_f64();
            ((rate * UNCONSTRAINED_SECONDS) as u64).clamp(PROBE_BYTES, len)
        } else {
            len
        };
        sizes.push((d, size));
        out.bytes.push((d, size));
    }
    for _ in 0..runs {
        for &(d, size) in &sizes {
            let cpu_before = fwd.cpu_seconds();
            let slowest = match pacing {
                Pacing::Unconstrained => size as f64 / (UNCONSTRAINED_SECONDS * 0.25),
                _ => 0.25e6,
            };
            let t = timed_transfer(fwd, d, size, size as f64 / slowest).await?;
            let cpu = fwd.cpu_seconds() - cpu_before;
            out.mb_s.push((d, t.mb_per_s()));
            out.cpu_s_per_gb.push(cpu / (size as f64 / 1e9));
            out.core_fraction.push(cpu / t.elapsed.as_secs_f64());
        }
    }
    Ok(())
}

/// One checked transfer that must finish within `seconds` plus start-up slack.
async fn timed_transfer(
    fwd: &Forwarder,
    d: Direction,
    len: u64,
    seconds: f64,
) -> anyhow::Result<tcp::Transfer> {
    let budget = Duration::from_secs_f64(seconds + 30.0);
    tokio::time::timeout(budget, tcp::transfer(fwd.addr, d, len))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the {} of {len} bytes did not finish in {budget:.0?}",
                d.name()
            )
        })?
}

/// Generous: four times the realistic ceiling's time, plus start-up.
fn transfer_budget(len: u64) -> Duration {
    Duration::from_secs_f64(len as f64 / 0.25e6 + 30.0)
}

fn per_direction(s: &Series, d: Direction) -> Vec<f64> {
    s.mb_s
        .iter()
        .filter(|(x, _)| *x == d)
        .map(|(_, v)| *v)
        .collect()
}

/// Throughput (realistic and unconstrained), loss and cost of one tool.
pub async fn throughput_and_loss(
    fx: &Fixture,
    tools: &Tools,
    tool: &str,
    plan: Plan,
    results: &mut Results,
) {
    let cases = [
        ("realistic", Pacing::Realistic, plan.realistic_bytes),
        (
            "unconstrained",
            Pacing::Unconstrained,
            plan.unconstrained_bytes,
        ),
    ];
    for (name, pacing, len) in cases {
        match series(
            fx,
            tools,
            tool,
            (pacing, faults(0.0, None)),
            len,
            plan.transfer_runs,
        )
        .await
        {
            Ok(s) => {
                for d in DIRECTIONS {
                    let mb_s = Summary::of(&per_direction(&s, d)).expect("runs > 0");
                    eprintln!(
                        "throughput: {tool} {name} {}: {:.3} MB/s",
                        d.name(),
                        mb_s.median
                    );
                    results.throughput.push(ThroughputRow {
                        tool: tool.into(),
                        pacing: name.into(),
                        direction: d,
                        bytes: s.bytes.iter().find(|b| b.0 == d).map_or(len, |b| b.1),
                        mb_s,
                    });
                    if name == "realistic" {
                        results.loss.push(LossRow {
                            tool: tool.into(),
                            direction: d,
                            loss_pct: 0.0,
                            mb_s,
                        });
                    }
                }
                results.cost.push(CostRow {
                    tool: tool.into(),
                    scenario: format!("{name}, {} transfers each way", plan.transfer_runs),
                    peak_rss_mib: Summary::of(&[s.peak_rss_mib]).expect("one"),
                    cpu_s_per_gb: Summary::of(&s.cpu_s_per_gb).expect("runs > 0"),
                    core_fraction: Summary::of(&s.core_fraction).expect("runs > 0"),
                });
            }
            Err(e) => results.note(tool, &format!("{name} throughput"), format!("{e:#}")),
        }
    }
    for pct in [1.0, 2.0, 5.0] {
        let f = faults(pct / 100.0, None);
        match series(
            fx,
            tools,
            tool,
            (Pacing::Realistic, f),
            plan.realistic_bytes,
            plan.transfer_runs,
        )
        .await
        {
            Ok(s) => {
                for d in DIRECTIONS {
                    let mb_s = Summary::of(&per_direction(&s, d)).expect("runs > 0");
                    eprintln!("loss: {tool} {pct}% {}: {:.3} MB/s", d.name(), mb_s.median);
                    results.loss.push(LossRow {
                        tool: tool.into(),
                        direction: d,
                        loss_pct: pct,
                        mb_s,
                    });
                }
            }
            Err(e) => results.note(
                tool,
                &format!("throughput at {pct}% loss"),
                format!("{e:#}"),
            ),
        }
    }
    fx.conditions(Pacing::Realistic, Faults::default());
}

// ---------------------------------------------------------------- proxy cost

/// Peak RSS and CPU of `sm-ssh proxy` (ssh's ProxyCommand) while it moves
/// data: one process per transfer, its stdin and stdout carrying the bytes
/// to the bench target's port, as ssh would use it.
pub async fn proxy_cost(fx: &Fixture, tools: &Tools, plan: Plan, results: &mut Results) {
    let cases = [
        ("realistic", Pacing::Realistic, plan.realistic_bytes),
        (
            "unconstrained",
            Pacing::Unconstrained,
            plan.unconstrained_bytes.min(32 << 20),
        ),
    ];
    for (name, pacing, len) in cases {
        fx.conditions(pacing, Faults::default());
        let mut peak = Vec::new();
        let mut cpu_s_per_gb = Vec::new();
        let mut core_fraction = Vec::new();
        let mut failed = None;
        'runs: for _ in 0..plan.transfer_runs {
            for d in DIRECTIONS {
                match proxy_transfer(fx, tools, pacing, d, len).await {
                    Ok((t, rss, cpu)) => {
                        peak.push(rss);
                        cpu_s_per_gb.push(cpu / (len as f64 / 1e9));
                        core_fraction.push(cpu / t.elapsed.as_secs_f64());
                    }
                    Err(e) => {
                        failed = Some(e);
                        break 'runs;
                    }
                }
            }
        }
        let scenario = format!(
            "proxy, {name}, {} transfers of {} each way, one process each",
            plan.transfer_runs,
            crate::report::mib(len)
        );
        if let Some(e) = failed {
            results.note(SM_SSH, &scenario, format!("{e:#}"));
            continue;
        }
        let rss = Summary::of(&peak).expect("runs > 0");
        eprintln!("cost: sm-ssh proxy {name}: peak RSS {:.1} MiB", rss.max);
        results.cost.push(CostRow {
            tool: SM_SSH.into(),
            scenario,
            peak_rss_mib: rss,
            cpu_s_per_gb: Summary::of(&cpu_s_per_gb).expect("runs > 0"),
            core_fraction: Summary::of(&core_fraction).expect("runs > 0"),
        });
    }
    fx.conditions(Pacing::Realistic, Faults::default());
}

/// One transfer through a new `sm-ssh proxy --port 9000`; its peak RSS
/// (MiB, polled while it runs) and the CPU seconds the transfer took.
async fn proxy_transfer(
    fx: &Fixture,
    tools: &Tools,
    pacing: Pacing,
    d: Direction,
    len: u64,
) -> anyhow::Result<(tcp::Transfer, f64, f64)> {
    use std::process::Stdio;
    let mut command = fx.command(&tools.sm_ssh);
    if pacing == Pacing::Unconstrained {
        command.env("SM_SSH_MAX_RATE", "unlimited");
    }
    command
        .args([
            "proxy",
            "--port",
            &TARGET_PORT.to_string(),
            &fixture::fqdn(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn()?;
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let (mut stdin, mut stdout) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
    );
    // VmHWM only grows: the last reading before exit is the peak.
    let polled = std::sync::Arc::new(std::sync::Mutex::new(0.0f64));
    let poller = tokio::spawn({
        let polled = polled.clone();
        async move {
            while let Some(v) = crate::procfs::peak_rss_mib(pid) {
                *polled.lock().expect("lock") = v;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let cpu_before = crate::procfs::cpu_seconds(pid).unwrap_or(0.0);
    let outcome = tokio::time::timeout(
        transfer_budget(len),
        tcp::transfer_over(&mut stdout, &mut stdin, d, len, &mut Vec::new()),
    )
    .await;
    let cpu = crate::procfs::cpu_seconds(pid).map(|c| c - cpu_before);
    let now = crate::procfs::peak_rss_mib(pid);
    poller.abort();
    drop(stdin);
    let _ = child.start_kill();
    let _ = child.wait().await;
    let t = outcome.map_err(|_| anyhow::anyhow!("the {} of {len} bytes timed out", d.name()))??;
    let rss = now.unwrap_or(0.0).max(*polled.lock().expect("lock"));
    Ok((t, rss, cpu.unwrap_or(f64::NAN)))
}

// ---------------------------------------------------------------- parallel

/// `sm-ssh forward --sessions N` with N concurrent downloads.
pub async fn parallel(fx: &Fixture, tools: &Tools, plan: Plan, results: &mut Results) {
    for n in [1usize, 2, 4, 8] {
        match parallel_once(fx, tools, n, plan).await {
            Ok(samples) => {
                let mb_s = Summary::of(&samples).expect("runs > 0");
                eprintln!("parallel: {n} sessions: {:.3} MB/s", mb_s.median);
                results.parallel.push(ParallelRow {
                    tool: SM_SSH.into(),
                    sessions: n,
                    connections: n,
                    mb_s,
                });
            }
            Err(e) => results.note(SM_SSH, &format!("forward --sessions {n}"), format!("{e:#}")),
        }
    }
    fx.conditions(Pacing::Realistic, Faults::default());
}

async fn parallel_once(
    fx: &Fixture,
    tools: &Tools,
    n: usize,
    plan: Plan,
) -> anyhow::Result<Vec<f64>> {
    fx.conditions(Pacing::Realistic, Faults::default());
    let fwd = start_forwarder(fx, tools, SM_SSH, n, Pacing::Realistic).await?;
    let mut samples = Vec::new();
    let mut failure = None;
    for _ in 0..plan.transfer_runs {
        let start = Instant::now();
        let jobs: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(tcp::transfer(
                    fwd.addr,
                    Direction::Download,
                    plan.parallel_bytes,
                ))
            })
            .collect();
        let mut ok = true;
        for job in jobs {
            match tokio::time::timeout(transfer_budget(plan.parallel_bytes), job).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => {
                    failure = Some(e);
                    ok = false;
                }
                _ => {
                    failure = Some(anyhow::anyhow!("a download did not finish in time"));
                    ok = false;
                }
            }
        }
        if !ok {
            break;
        }
        samples.push((n as u64 * plan.parallel_bytes) as f64 / 1e6 / start.elapsed().as_secs_f64());
    }
    let stderr = fwd.stop().await;
    match failure {
        Some(e) => Err(anyhow::anyhow!("{e:#}; forwarder: {stderr}")),
        None => Ok(samples),
    }
}

// ---------------------------------------------------------------- reconnect

/// Downloads while the fake cuts the websocket every `plan.cut_every_ms`.
pub async fn reconnect(fx: &Fixture, tools: &Tools, tool: &str, plan: Plan, results: &mut Results) {
    match reconnect_once(fx, tools, tool, plan).await {
        Ok(row) => {
            eprintln!(
                "reconnect: {tool}: {} cuts, stall {:.1} ms, {} bytes lost",
                row.cuts, row.stall_ms.median, row.bytes_lost
            );
            results.reconnect.push(row);
        }
        Err(e) => results.note(tool, "reconnect", format!("{e:#}")),
    }
    fx.conditions(Pacing::Realistic, Faults::default());
}

async fn reconnect_once(
    fx: &Fixture,
    tools: &Tools,
    tool: &str,
    plan: Plan,
) -> anyhow::Result<ReconnectRow> {
    fx.conditions(Pacing::Realistic, faults(0.0, Some(plan.cut_every_ms)));
    let fwd = start_forwarder(fx, tools, tool, 1, Pacing::Realistic).await?;
    let mut stalls = Vec::new();
    let mut cuts = 0;
    let mut lost = 0;
    let mut moved = 0;
    let mut failure = None;
    for _ in 0..plan.transfer_runs {
        let cuts_before = fx.cuts();
        let mut arrivals = Vec::new();
        let outcome = tokio::time::timeout(
            transfer_budget(plan.reconnect_bytes),
            tcp::transfer_noting(
                fwd.addr,
                Direction::Download,
                plan.reconnect_bytes,
                &mut arrivals,
            ),
        )
        .await;
        let resumed = (fx.cuts() - cuts_before) as usize;
        let got = match &outcome {
            Ok(Ok(t)) => t.bytes,
            _ => arrivals.last().map_or(0, |a| a.1),
        };
        moved += plan.reconnect_bytes;
        lost += plan.reconnect_bytes - got;
        let arrivals = match outcome {
            Ok(Ok(t)) => t.arrivals,
            Ok(Err(e)) => {
                failure = Some(e);
                break;
            }
            Err(_) => {
                failure = Some(anyhow::anyhow!(
                    "the download stalled for good after {got} bytes"
                ));
                break;
            }
        };
        // Each cut's stall is one of the longest pauses between reads.
        let mut gaps: Vec<f64> = arrivals
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).as_secs_f64() * 1e3)
            .collect();
        gaps.sort_by(|a, b| b.total_cmp(a));
        stalls.extend(gaps.into_iter().take(resumed));
        cuts += resumed;
    }
    let stderr = fwd.stop().await;
    if let Some(e) = failure {
        anyhow::bail!("{e:#} ({lost} of {moved} bytes lost; forwarder: {stderr})");
    }
    Ok(ReconnectRow {
        tool: tool.into(),
        cut_every_ms: plan.cut_every_ms,
        cuts,
        stall_ms: Summary::of(&stalls)
            .ok_or_else(|| anyhow::anyhow!("the fake cut no websocket during the transfers"))?,
        bytes_lost: lost,
        bytes_moved: moved,
    })
}
