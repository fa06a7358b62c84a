//! The data channel under faults, end to end through the fake with real
//! programs: the OpenSSH client (with `sm-ssh proxy` as its ProxyCommand) and
//! sshd moving 20 MB both ways, and `sm-ssh forward` carrying 16 concurrent
//! echo connections over one smux session, while the fake drops 5%,
//! duplicates 5% and reorders 5% of the frames each way and cuts the
//! websocket every 2 seconds. Each test also checks the fake's counters, so it
//! cannot pass on a quiet channel.
//!
//! The fake's own pacing is unconstrained to keep the tests short; the
//! client's pacing is its default.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::pseudo_random;
use common::ssh::{hex_sha256, quoted, SshWorld};
use common::{seed_with, start_forward, training_instance, Env};
use sm_ssh_integration::datachannel::StatsSnapshot;
use sm_ssh_integration::world::{DirectionFaults, Faults, Pacing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const INSTANCE: &str = "mi-0fa017c0ffee00042";
const TRANSFER: usize = 20 << 20;
const CLIENTS: usize = 16;
/// What each forwarded connection sends and expects back.
const PER_CLIENT: usize = 256 << 10;

/// 5% drop, duplication and reordering each way; a cut every 2 s.
fn faults() -> Faults {
    let lossy = DirectionFaults {
        drop: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        ..DirectionFaults::default()
    };
    Faults {
        seed: 0x00fa_0175,
        to_agent: lossy.clone(),
        to_client: lossy,
        cut_every_ms: Some(2000),
        ..Faults::default()
    }
}

/// A fake with unconstrained pacing and [`faults`] from the first session on.
fn faulty_env() -> Env {
    let mut seed = seed_with(vec![]);
    seed.pacing = Pacing::Unconstrained;
    seed.faults = faults();
    Env::start(seed)
}

fn stats(env: &Env) -> StatsSnapshot {
    env.fake.world().lock().unwrap().data_plane.stats()
}

/// Every kind of fault happened; `context` goes into the failure message.
#[track_caller]
fn assert_faults_happened(env: &Env, context: &str) {
    let stats = stats(env);
    assert!(
        stats.dropped > 0 && stats.duplicated > 0 && stats.reordered > 0 && stats.cuts > 0,
        "the faults did not all happen ({context}): {stats:#?}"
    );
}

/// A training job whose sshd sits behind the faulty fake.
fn ssh_world() -> SshWorld {
    SshWorld::start(faulty_env(), INSTANCE, "faulty-job")
}

/// Panics with both streams, sshd's log and the fake's counters unless `output` succeeded.
#[track_caller]
fn check(world: &SshWorld, output: &Output, what: &str) {
    world.check(output, what, &format!("{:#?}", stats(&world.env)));
}

/// The 20 MB test file, and where it lives "on the instance" (sshd runs on
/// this machine as the test's user, so a local temporary path will do).
fn twenty_mb(dir: &Path) -> (Vec<u8>, String, PathBuf) {
    let data = pseudo_random(TRANSFER, 0x9e37_79b9_7f4a_7c15);
    let hash = hex_sha256(&data);
    (data, hash, dir.join("on-the-instance.bin"))
}

// The client paces itself at 1000 messages/s by default, so 20 480 messages
// take 20 s at least: the 2 s cuts cannot miss this transfer.
#[test]
fn twenty_mb_upload_through_cat_survives_loss_duplication_reordering_and_cuts() {
    let world = ssh_world();
    let dir = tempfile::tempdir().unwrap();
    let (data, expected, remote) = twenty_mb(dir.path());
    let local = dir.path().join("upload.bin");
    std::fs::write(&local, &data).unwrap();

    // ssh's stdin is the file; the remote side hashes what it stored.
    let upload = world
        .ssh(&format!("cat > {0} && sha256sum < {0}", quoted(&remote)))
        .stdin(std::fs::File::open(&local).unwrap())
        .output()
        .expect("ssh runs");
    check(&world, &upload, "the upload");
    let remote_hash = String::from_utf8_lossy(&upload.stdout);
    assert!(
        remote_hash.starts_with(&expected),
        "the instance hashed {remote_hash:?}, expected {expected}"
    );
    assert_eq!(hex_sha256(&std::fs::read(&remote).unwrap()), expected);
    assert_faults_happened(&world.env, "during the upload");
    assert!(world.resumes() > 0, "the client never resumed after a cut");
}

// The agent resends only its oldest unacknowledged message, once per 100 ms
// tick (as the real agent does), so each frame or ack lost on the way down
// stalls the stream for a tick: about 2 000 of them here, some 200 s in all.
#[test]
fn twenty_mb_download_through_cat_survives_loss_duplication_reordering_and_cuts() {
    let world = ssh_world();
    let dir = tempfile::tempdir().unwrap();
    let (data, expected, remote) = twenty_mb(dir.path());
    std::fs::write(&remote, &data).unwrap();

    // The remote `cat` goes to ssh's stdout, straight into a file.
    let back = dir.path().join("download.bin");
    let download = world
        .ssh(&format!("cat {}", quoted(&remote)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&back).unwrap())
        .output()
        .expect("ssh runs");
    check(&world, &download, "the download");
    let downloaded = std::fs::read(&back).unwrap();
    assert_eq!(downloaded.len(), TRANSFER);
    assert_eq!(hex_sha256(&downloaded), expected);
    assert_faults_happened(&world.env, "during the download");
    assert!(world.resumes() > 0, "the client never resumed after a cut");
}

/// An echo server: every connection gets its own bytes back.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = socket.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    addr
}

/// Sends client `n`'s distinct data through `port` while reading the echo,
/// and checks the echo byte for byte.
async fn echo_client(port: u16, n: usize) {
    let sent = pseudo_random(PER_CLIENT, 0x5eed_0000 + n as u64);
    let socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let to_send = sent.clone();
    let writing = tokio::spawn(async move { writer.write_all(&to_send).await.map(|_| writer) });
    let mut echoed = vec![0u8; PER_CLIENT];
    reader
        .read_exact(&mut echoed)
        .await
        .unwrap_or_else(|e| panic!("client {n}: echo cut short: {e}"));
    // Keep the write half open until the whole echo is in.
    let _writer = writing.await.unwrap().expect("the data is sent");
    if echoed != sent {
        let first = echoed.iter().zip(&sent).position(|(a, b)| a != b);
        panic!("client {n}: the echo differs from what it sent, first at byte {first:?}");
    }
}

#[test]
fn sixteen_concurrent_forwarded_connections_echo_intact_through_faults() {
    let env = faulty_env();
    let echo = env.runtime().block_on(echo_server());
    let mut instance = training_instance(INSTANCE, "faulty-job", 1_700_000_000);
    instance.ports.insert(7000, echo);
    env.add_instance(instance);

    let forward = start_forward(
        &env,
        &[
            INSTANCE,
            "-L",
            "0:localhost:7000",
            "--document",
            "AWS-StartPortForwardingSession",
        ],
        1,
    );
    let port = forward.ports[0];
    // 4 MB each way at the client's 1000 messages/s: several cuts at least.
    let results = env.runtime().block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|n| tokio::spawn(echo_client(port, n)))
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await);
        }
        results
    });
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed: {failures:#?}\n--- forward stderr\n{}\n--- fake stats\n{:#?}",
        failures.len(),
        forward.stderr(),
        stats(&env)
    );
    let started = env
        .fake
        .events()
        .iter()
        .filter(|e| e.action == "ssm:StartSession" && e.error.is_none())
        .count();
    assert_eq!(started, 1, "all 16 connections share one smux session");
    assert_faults_happened(&env, "during the forwarded connections");
}
