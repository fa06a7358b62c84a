//! A real broken network (docs/reliability.md). The fake's data channel
//! listens inside a network namespace this test creates, reached from the
//! host over a veth pair; nftables rules inside the namespace drop packets at
//! random or all of them (the kernel's TCP then retransmits, or the socket
//! goes silent without a reset), and a relay in the test adds latency. The
//! real OpenSSH client, with `sm-ssh proxy` as its ProxyCommand, moves data
//! to a real sshd across it. The control plane (ResumeSession) stays on
//! loopback: the faults hit the data channel only.
//!
//! Every namespace, veth pair and rule set has a name unique to the process
//! and test, and is removed when the test ends. Where namespaces are
//! impossible (not root, no `ip netns`, no `nft`), each test says so on the
//! terminal and skips.

mod common;

use std::fs::File;
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::pseudo_random;
use common::ssh::{hex_sha256, quoted, SshWorld};
use common::{seed_with, Env};
use sm_ssh_integration::datachannel::serve_listener;
use sm_ssh_integration::world::Pacing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INSTANCE: &str = "mi-0e7e70000000c0de1";
const JOB: &str = "netns-job";
/// How long the mid-transfer blackhole lasts (the scenario).
const BLACKHOLE: Duration = Duration::from_secs(20);
/// Liveness settings the tests give sm-ssh, so that outages are found in
/// seconds (the defaults, 30 s pings and a 20 s pong deadline, are in
/// docs/reliability.md).
const PING_INTERVAL: &str = "1";
const PONG_TIMEOUT: &str = "3";
const CONNECT_TIMEOUT: &str = "2";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace joined to the host by a veth pair, with addresses
/// `10.a.b.1` (host side) and `10.a.b.2`, `10.a.b.3` (inside), and an empty
/// nftables table `inet fault` with input and output chains inside.
struct Netns {
    name: String,
    veth: String,
    net: [u8; 3],
}

/// Runs a command; its stdout, or a one-line reason it failed.
fn run(command: &mut Command, stdin: &str) -> Result<String, String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command:?}: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin.as_bytes())
        .map_err(|e| format!("{command:?}: {e}"))?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip(args: &str) -> Result<String, String> {
    run(Command::new("ip").args(args.split_whitespace()), "")
}

impl Netns {
    /// Creates the namespace, or says why it cannot on the terminal (past the
    /// test harness's capture) and returns `None`.
    fn create(test: &str) -> Option<Netns> {
        match Netns::try_create() {
            Ok(netns) => Some(netns),
            Err(why) => {
                let line =
                    format!("SKIPPED {test}: network namespaces are impossible here: {why}\n");
                let _ = std::io::stderr().write_all(line.as_bytes());
                None
            }
        }
    }

    fn try_create() -> Result<Netns, String> {
        let uid = run(Command::new("id").arg("-u"), "")?;
        if uid.trim() != "0" {
            return Err("the test is not running as root".into());
        }
        run(Command::new("nft").arg("--version"), "").map_err(|e| format!("no nft ({e})"))?;
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let netns = Netns {
            name: format!("smssh-{pid}-{n}"),
            veth: format!("sm{}x{n}", pid % 100_000),
            net: [
                10,
                64 + (pid % 128) as u8,
                ((pid / 128 % 16) * 16 + n % 16) as u8,
            ],
        };
        // From here on, Drop removes whatever was made.
        ip(&format!("netns add {}", netns.name))?;
        let (name, veth) = (&netns.name, &netns.veth);
        ip(&format!(
            "link add {veth} type veth peer name {veth}p netns {name}"
        ))?;
        ip(&format!("addr add {}/29 dev {veth}", netns.addr(1)))?;
        ip(&format!("link set {veth} up"))?;
        for host in [2, 3] {
            ip(&format!(
                "-n {name} addr add {}/29 dev {veth}p",
                netns.addr(host)
            ))?;
        }
        ip(&format!("-n {name} link set {veth}p up"))?;
        ip(&format!("-n {name} link set lo up"))?;
        netns.nft(
            "table inet fault {
               chain input { type filter hook input priority 0; policy accept; }
               chain output { type filter hook output priority 0; policy accept; }
             }",
        )?;
        Ok(netns)
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], host)
    }

    /// Applies an nftables script inside the namespace.
    fn nft(&self, script: &str) -> Result<String, String> {
        run(
            Command::new("ip").args(["netns", "exec", &self.name, "nft", "-f", "-"]),
            script,
        )
    }

    fn rules(&self, script: &str) {
        self.nft(script).unwrap_or_else(|e| panic!("nft: {e}"));
    }

    /// Removes every fault rule.
    fn heal(&self) {
        self.rules("flush chain inet fault input\nflush chain inet fault output");
    }

    /// The sum of the `counter` rules' packet counts whose rule text contains `tag`.
    fn counted(&self, tag: &str) -> u64 {
        let listing = run(
            Command::new("ip").args([
                "netns", "exec", &self.name, "nft", "list", "table", "inet", "fault",
            ]),
            "",
        )
        .expect("nft lists the table");
        listing
            .lines()
            .filter(|line| line.contains(tag))
            .filter_map(|line| {
                line.split("packets ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// A listening socket inside the namespace: bound by a thread that
    /// enters it, so the rest of the process stays where it is.
    fn listen(&self, addr: SocketAddrV4) -> TcpListener {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let netns = File::open(&path).expect("the namespace's file");
                    rustix::thread::move_into_link_name_space(
                        netns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .expect("setns into the test's namespace");
                    TcpListener::bind(addr).expect("listen inside the namespace")
                })
                .join()
                .expect("the binding thread")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&format!("link del {}", self.veth));
        let _ = ip(&format!("netns del {}", self.name));
    }
}

/// A training job with a real sshd, whose data channel listens in `netns` on
/// `bind` (port 0: any); returns the port. StreamUrls still name the fake's
/// loopback port until the test says otherwise.
fn netns_world(netns: &Netns, bind: Ipv4Addr) -> (SshWorld, u16) {
    let mut seed = seed_with(vec![]);
    seed.pacing = Pacing::Unconstrained;
    let world = SshWorld::start(Env::start(seed), INSTANCE, JOB);
    let listener = netns.listen(SocketAddrV4::new(bind, 0));
    let port = listener.local_addr().expect("bound").port();
    let _runtime = world.env.runtime().enter();
    serve_listener(world.env.fake.world(), listener).expect("data channel in the namespace");
    (world, port)
}

/// [`netns_world`] on the namespace's first address, named in the StreamUrls.
fn direct_world(netns: &Netns) -> (SshWorld, u16) {
    let (world, port) = netns_world(netns, netns.addr(2));
    let endpoint = format!("{}:{port}", netns.addr(2));
    world.env.fake.set_stream_endpoint(Some(endpoint));
    (world, port)
}

/// A TCP relay on 127.0.0.1 that holds every chunk for `one_way` in each
/// direction before passing it on to `upstream` (this kernel has no netem).
async fn delay_relay(upstream: SocketAddr, one_way: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::join!(
                    delayed(client_read, server_write, one_way),
                    delayed(server_read, client_write, one_way)
                );
            });
        }
    });
    addr
}

/// One direction of [`delay_relay`]: a delay line, so throughput is kept.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (line, mut out) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(512);
    let reading = async move {
        let mut buffer = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            let due = tokio::time::Instant::now() + delay;
            if line.send((due, buffer[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writing = async move {
        while let Some((due, bytes)) = out.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
}

/// `ssh` with sm-ssh's liveness settings for these tests and its debug log in
/// `log`.
fn with_limits(mut ssh: Command, log: &Path) -> Command {
    ssh.env("SM_SSH_PING_INTERVAL", PING_INTERVAL)
        .env("SM_SSH_PONG_TIMEOUT", PONG_TIMEOUT)
        .env("SM_SSH_CONNECT_TIMEOUT", CONNECT_TIMEOUT)
        .env("SM_SSH_LOG", log);
    ssh
}

/// Waits (polling, with a safety limit) until `path` holds at least `len` bytes.
fn wait_for_size(path: &Path, len: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::metadata(path).map_or(0, |m| m.len()) < len {
        assert!(
            Instant::now() < deadline,
            "{what}: the transfer never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Uploads `data` with `cat > remote`, applying `fault` once the first MiB
/// has arrived; returns ssh's output and the hash of what the instance stored.
fn upload_with_fault(
    world: &SshWorld,
    ssh: Command,
    data: &[u8],
    dir: &Path,
    fault: impl FnOnce(),
) -> (Output, String) {
    let local = dir.join("upload.bin");
    std::fs::write(&local, data).unwrap();
    let remote = dir.join("on-the-instance.bin");
    let mut ssh = world.ssh_via(ssh, &format!("cat > {}", quoted(&remote)));
    let child = ssh
        .stdin(File::open(&local).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh runs");
    wait_for_size(&remote, 1 << 20, "upload");
    fault();
    let output = child.wait_with_output().expect("ssh ends");
    let stored = std::fs::read(&remote).map_or_else(|e| e.to_string(), |d| hex_sha256(&d));
    (output, stored)
}

#[test]
fn twenty_mb_both_ways_over_100_ms_rtt_with_1_percent_tcp_loss() {
    let Some(netns) = Netns::create("twenty_mb_both_ways_over_100_ms_rtt_with_1_percent_tcp_loss")
    else {
        return;
    };
    let (world, port) = netns_world(&netns, netns.addr(2));
    let upstream = SocketAddr::from((netns.addr(2), port));
    let relay = world
        .env
        .runtime()
        .block_on(delay_relay(upstream, Duration::from_millis(50)));
    world.env.fake.set_stream_endpoint(Some(relay.to_string()));
    netns.rules(&format!(
        "add rule inet fault input tcp dport {port} numgen random mod 100 < 1 counter drop comment \"loss\"
         add rule inet fault output tcp sport {port} numgen random mod 100 < 1 counter drop comment \"loss\""
    ));
    let dir = tempfile::tempdir().unwrap();
    let data = pseudo_random(20 << 20, 0x1055_0001);
    let expected = hex_sha256(&data);
    let remote = dir.path().join("on-the-instance.bin");
    let local = dir.path().join("upload.bin");
    std::fs::write(&local, &data).unwrap();

    let started = Instant::now();
    let upload = world
        .ssh(&format!("cat > {0} && sha256sum < {0}", quoted(&remote)))
        .stdin(File::open(&local).unwrap())
        .output()
        .expect("ssh runs");
    world.check(&upload, "the upload", "");
    let uploaded = started.elapsed();
    assert!(String::from_utf8_lossy(&upload.stdout).starts_with(&expected));

    let back = dir.path().join("download.bin");
    let started = Instant::now();
    let download = world
        .ssh(&format!("cat {}", quoted(&remote)))
        .stdin(Stdio::null())
        .stdout(File::create(&back).unwrap())
        .output()
        .expect("ssh runs");
    world.check(&download, "the download", "");
    let downloaded = started.elapsed();
    assert_eq!(hex_sha256(&std::fs::read(&back).unwrap()), expected);

    let dropped = netns.counted("loss");
    assert!(
        dropped > 0,
        "nftables dropped nothing: the loss never happened"
    );
    eprintln!("20 MiB over 100 ms RTT, 1% loss: up {uploaded:?}, down {downloaded:?}, {dropped} packets dropped");
}

#[test]
fn twenty_second_blackhole_mid_transfer_is_invisible_to_ssh() {
    let Some(netns) = Netns::create("twenty_second_blackhole_mid_transfer_is_invisible_to_ssh")
    else {
        return;
    };
    let (world, port) = direct_world(&netns);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sm-ssh.log");
    let data = pseudo_random(12 << 20, 0xb1ac_0001);
    let (output, stored) = upload_with_fault(
        &world,
        with_limits(Command::new("ssh"), &log),
        &data,
        dir.path(),
        || {
            netns.rules(&format!(
                "add rule inet fault input tcp dport {port} counter drop comment \"blackhole\"
                 add rule inet fault output tcp sport {port} counter drop comment \"blackhole\""
            ));
            std::thread::sleep(BLACKHOLE);
            assert!(
                netns.counted("blackhole") > 0,
                "the blackhole dropped nothing"
            );
            netns.heal();
        },
    );
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    world.check(&output, "the upload across the blackhole", &log);
    assert_eq!(stored, hex_sha256(&data), "the instance stored other bytes");
    assert!(
        log.contains("no pong within"),
        "the pong deadline did not notice the blackhole:\n{log}"
    );
    assert!(
        world.resumes() > 0,
        "sm-ssh never resumed the session:\n{log}"
    );
}

#[test]
fn blackhole_longer_than_the_reconnect_budget_ends_with_one_clear_line() {
    let Some(netns) =
        Netns::create("blackhole_longer_than_the_reconnect_budget_ends_with_one_clear_line")
    else {
        return;
    };
    let (world, port) = direct_world(&netns);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sm-ssh.log");
    let mut ssh = world.ssh_via(
        with_limits(Command::new("ssh"), &log),
        "echo ready && cat > /dev/null",
    );
    let mut child = ssh
        .env("SM_SSH_MAX_RECONNECTS", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh runs");
    // The session is up once the remote shell speaks.
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready", "the session never came up");
    // An interactive-sized trickle keeps going while the network is gone.
    let mut stdin = child.stdin.take().unwrap();
    let chunk = pseudo_random(4096, 7);
    stdin.write_all(&chunk).unwrap();
    netns.rules(&format!(
        "add rule inet fault input tcp dport {port} drop
         add rule inet fault output tcp sport {port} drop"
    ));
    let blackholed = Instant::now();
    let feeder = std::thread::spawn(move || {
        while stdin.write_all(&chunk).is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // The safety net against a hang: far above the documented budget.
    let deadline = blackholed + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sm-ssh hung past its reconnect budget");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let gave_up_after = blackholed.elapsed();
    feeder.join().unwrap();
    let mut stderr = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .for_each(|line| stderr.push_str(&format!("{line}\n")));
    assert!(!status.success(), "ssh succeeded without a network");
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("sm-ssh")).collect();
    assert_eq!(ours.len(), 1, "expected one line from sm-ssh:\n{stderr}");
    assert!(
        ours[0].contains("reconnect attempts failed"),
        "unclear: {}",
        ours[0]
    );
    // Documented bound (docs/reliability.md): ping + pong deadline, then per
    // attempt its backoff (at most 0.1 s, 0.2 s) and a dial timeout (2 s).
    let budget = Duration::from_secs_f64(1.0 + 3.0 + 0.1 + 0.2 + 2.0 * 2.0);
    eprintln!(
        "gave up {gave_up_after:?} after the blackhole began (budget {budget:?}): {}",
        ours[0]
    );
    assert!(
        gave_up_after < budget + Duration::from_secs(15),
        "gave up after {gave_up_after:?}, documented budget {budget:?}"
    );
}

#[test]
fn reconnect_resolves_the_stream_host_afresh_after_its_address_changes() {
    let Some(netns) =
        Netns::create("reconnect_resolves_the_stream_host_afresh_after_its_address_changes")
    else {
        return;
    };
    if run(Command::new("unshare").args(["--mount", "true"]), "").is_err() {
        let _ = std::io::stderr()
            .write_all(b"SKIPPED reconnect_resolves_...: unshare --mount is impossible here\n");
        return;
    }
    let (world, port) = netns_world(&netns, Ipv4Addr::UNSPECIFIED);
    // The StreamUrl names a host; ssh (and so sm-ssh) runs in a mount
    // namespace of its own where /etc/hosts is this file, which the test
    // rewrites when the host "moves". The machine's /etc/hosts is untouched.
    let host = format!("dc-{}.sm-ssh.test", netns.name);
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("{} {host}\n", netns.addr(2))).unwrap();
    world
        .env
        .fake
        .set_stream_endpoint(Some(format!("{host}:{port}")));
    netns.rules(&format!(
        "add rule inet fault input ip daddr {} tcp dport {port} counter comment \"moved\"",
        netns.addr(3)
    ));
    let mut unshare = Command::new("unshare");
    unshare.args([
        "--mount",
        "--",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
    ]);
    unshare.arg(&hosts).arg("ssh");
    let log = dir.path().join("sm-ssh.log");
    let data = pseudo_random(8 << 20, 0xadd0_0001);
    let (output, stored) = upload_with_fault(
        &world,
        with_limits(unshare, &log),
        &data,
        dir.path(),
        || {
            // The old address goes dark for good; the name now points elsewhere.
            netns.rules(&format!(
                "add rule inet fault input ip daddr {0} tcp dport {port} drop
             add rule inet fault output ip saddr {0} tcp sport {port} drop",
                netns.addr(2)
            ));
            // Rewritten in place: the bind mount follows the file, not the name.
            std::fs::write(&hosts, format!("{} {host}\n", netns.addr(3))).unwrap();
        },
    );
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    world.check(&output, "the upload across the address change", &log);
    assert_eq!(stored, hex_sha256(&data), "the instance stored other bytes");
    assert!(
        world.resumes() > 0,
        "sm-ssh never resumed the session:\n{log}"
    );
    assert!(
        netns.counted("moved") > 0,
        "nothing reached the new address:\n{log}"
    );
}
