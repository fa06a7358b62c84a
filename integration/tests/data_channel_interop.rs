//! The client engine of `proxy/` against the fake data plane: two
//! independent implementations of the protocol carrying bytes through a TCP
//! echo, cleanly and under every relay fault at once; and the behaviour of
//! each agent version (basic or smux, smux keep-alive), smux FIN semantics and
//! ConnectToPortError attribution.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;
use sm_ssh_integration::datachannel::serve_router;
use sm_ssh_integration::world::{
    DirectionFaults, Faults, Instance, Pacing, Session, SharedWorld, SmuxKeepAlive, World,
};
use sm_ssh_proxy::{
    bridge, connect_port, ControlError, MuxSession, Options, PortSession, SessionControl,
    StreamTarget,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const INSTANCE: &str = "mi-0123456789abcdef0";
const SESSION: &str = "alice-0fedcba9876543210";

struct Fake {
    world: SharedWorld,
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A TCP echo server on loopback.
async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let echo_task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (echo_addr, echo_task)
}

async fn start(pacing: Pacing, faults: Faults) -> Fake {
    let (echo_addr, echo_task) = echo_server().await;
    let instance = Instance {
        id: INSTANCE.into(),
        ports: BTreeMap::from([(22, echo_addr)]),
        ..Instance::default()
    };
    let world = World {
        instances: BTreeMap::from([(INSTANCE.to_string(), instance)]),
        sessions: [session("AWS-StartSSHSession", json!({"portNumber": "22"}))].into(),
        pacing,
        faults,
        ..World::default()
    };
    serve(world, vec![echo_task]).await
}

/// A session of `document` with these properties, token `token-0`.
fn session(document: &str, properties: serde_json::Value) -> (String, Session) {
    let (terminated, _) = watch::channel(false);
    let session = Session {
        id: SESSION.into(),
        target: INSTANCE.into(),
        document: document.into(),
        properties,
        unused_tokens: HashSet::from(["token-0".to_string()]),
        terminated,
        started: std::time::Instant::now(),
    };
    (SESSION.to_string(), session)
}

async fn serve(world: World, mut tasks: Vec<JoinHandle<()>>) -> Fake {
    let world: SharedWorld = Arc::new(Mutex::new(world));
    let (addr, server) = serve_router(world.clone()).await.unwrap();
    tasks.push(server);
    Fake { world, addr, tasks }
}

impl Fake {
    /// The control plane and the first token of the fake's session.
    fn client(&self) -> (Arc<Control>, StreamTarget) {
        let url = format!(
            "ws://{}/v1/data-channel/{SESSION}?role=publish_subscribe",
            self.addr
        );
        let control = Arc::new(Control {
            world: self.world.clone(),
            url: url.clone(),
            issued: Mutex::new(0),
        });
        let target = StreamTarget {
            session_id: SESSION.into(),
            stream_url: url,
            token: "token-0".into(),
        };
        (control, target)
    }
}

/// ResumeSession and TerminateSession, straight on the world.
struct Control {
    world: SharedWorld,
    url: String,
    issued: Mutex<u32>,
}

impl SessionControl for Control {
    async fn resume(&self, session_id: &str) -> Result<StreamTarget, ControlError> {
        let token = {
            let mut issued = self.issued.lock().unwrap();
            *issued += 1;
            format!("token-{issued}")
        };
        let mut world = self.world.lock().unwrap();
        let session = world
            .sessions
            .get_mut(session_id)
            .ok_or_else(|| ControlError::fatal("no such session"))?;
        if *session.terminated.borrow() {
            return Err(ControlError::fatal("session is terminated"));
        }
        session.unused_tokens.insert(token.clone());
        Ok(StreamTarget {
            session_id: session_id.to_owned(),
            stream_url: self.url.clone(),
            token,
        })
    }

    async fn terminate(&self, session_id: &str) -> Result<(), ControlError> {
        if let Some(session) = self.world.lock().unwrap().sessions.get(session_id) {
            session.terminated.send_replace(true);
        }
        Ok(())
    }
}

/// Echoes `size` bytes through a bridged session and checks every byte.
/// The client paces itself as sm-ssh does unless the fake is unconstrained.
async fn echo_through(fake: &Fake, size: usize) {
    let unconstrained = fake.world.lock().unwrap().pacing == Pacing::Unconstrained;
    let (control, target) = fake.client();
    let mut options = Options::default();
    if unconstrained {
        options.pacing = None;
    }
    let (app, session_side) = tokio::io::duplex(64 * 1024);
    let (bridge_read, bridge_write) = tokio::io::split(session_side);
    let session = tokio::spawn(bridge(target, control, options, bridge_read, bridge_write));
    let (mut app_read, mut app_write) = tokio::io::split(app);
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        app_write.write_all(&sent).await.unwrap();
        app_write
    });
    let mut echoed = vec![0u8; size];
    app_read.read_exact(&mut echoed).await.unwrap();
    assert!(echoed == data, "echo differs");
    // EOF on the session's input ends it.
    drop(writer.await.unwrap());
    drop(app_read);
    let end = session.await.unwrap().expect("session ends cleanly");
    if std::env::var_os("DATA_CHANNEL_VERBOSE").is_some() {
        eprintln!("client: {:?}", end.stats);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_engine_echoes_through_the_fake() {
    let fake = start(Pacing::Unconstrained, Faults::default()).await;
    echo_through(&fake, 512 * 1024).await;
    let stats = fake.world.lock().unwrap().data_plane.stats();
    assert_eq!(stats.sessions_closed, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_engine_survives_every_relay_fault() {
    let noisy = DirectionFaults {
        drop: 0.02,
        duplicate: 0.02,
        reorder: 0.02,
        delay_ms: 0,
        corrupt_digest: 0.02,
    };
    let faults = Faults {
        seed: 11,
        to_agent: noisy.clone(),
        to_client: noisy,
        cut_after_messages: Some(250),
        ..Faults::default()
    };
    let fake = start(Pacing::Unconstrained, faults).await;
    echo_through(&fake, 96 * 1024).await;
    let stats = fake.world.lock().unwrap().data_plane.stats();
    assert!(stats.reconnects > 0 && stats.dropped > 0, "{stats:?}");
    assert!(
        stats.duplicated > 0 && stats.reordered > 0 && stats.corrupted > 0,
        "{stats:?}"
    );
}

/// Prints the echo throughput of the proxy engine through the fake for each
/// pacing (`-- --ignored --nocapture`). Measured, never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn measure_proxy_engine_echo_throughput() {
    for pacing in [Pacing::Unconstrained, Pacing::Realistic] {
        let fake = start(pacing, Faults::default()).await;
        let size = 2 * 1024 * 1024;
        let begun = std::time::Instant::now();
        echo_through(&fake, size).await;
        let secs = begun.elapsed().as_secs_f64();
        let stats = fake.world.lock().unwrap().data_plane.stats();
        println!(
            "{pacing:?}: {:.2} MB/s each direction; fake: {stats:?}",
            size as f64 / secs / 1e6,
        );
    }
}

/// A port-forwarding session (AWS-StartPortForwardingSession to port 80) on an
/// instance running agent `agent_version`, whose port 80 is `target`.
async fn start_port(agent_version: &str, target: SocketAddr, keepalive: SmuxKeepAlive) -> Fake {
    let instance = Instance {
        id: INSTANCE.into(),
        agent_version: agent_version.into(),
        ports: BTreeMap::from([(80, target)]),
        ..Instance::default()
    };
    let properties =
        json!({"localPortNumber": "0", "portNumber": "80", "type": "LocalPortForwarding"});
    let world = World {
        instances: BTreeMap::from([(INSTANCE.to_string(), instance)]),
        sessions: [session("AWS-StartPortForwardingSession", properties)].into(),
        pacing: Pacing::Unconstrained,
        smux_keepalive: keepalive,
        ..World::default()
    };
    serve(world, Vec::new()).await
}

async fn connect_mux(fake: &Fake, options: Options) -> MuxSession {
    let (control, target) = fake.client();
    match connect_port(target, control, options).await.unwrap() {
        PortSession::Mux(session) => session,
        PortSession::Basic(_) => panic!("the agent chose basic port forwarding"),
    }
}

async fn echo_once(session: &MuxSession, text: &[u8]) -> Vec<u8> {
    let mut stream = session.open_stream().await.unwrap();
    stream.write_all(text).await.unwrap();
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back).await.unwrap();
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_version_decides_basic_or_smux() {
    let (echo, _task) = echo_server().await;
    for (version, mux) in [
        ("3.0.196.0", false),
        ("3.0.222.0", true),
        ("3.3.1802.0", true),
    ] {
        let fake = start_port(version, echo, SmuxKeepAlive::default()).await;
        let (control, target) = fake.client();
        let session = connect_port(target, control, Options::default())
            .await
            .unwrap();
        assert_eq!(
            matches!(session, PortSession::Mux(_)),
            mux,
            "agent {version}"
        );
        match session {
            PortSession::Mux(session) => drop(session.close().await.unwrap()),
            PortSession::Basic(session) => drop(session.close().await.unwrap()),
        }
    }
}

/// smux keep-alive, with time compressed 30 times (a NOP every 333 ms, the
/// session closed after 1 s without a frame, 3 s of idleness for the 90 s of
/// the real thing): each case runs the same client code as sm-ssh, whose
/// NOP period is `Options::smux_keepalive` (10 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_live_on_old_agents_only_through_nops() {
    let keepalive = SmuxKeepAlive {
        interval_ms: 333,
        timeout_ms: 1000,
    };
    let idle = std::time::Duration::from_secs(3);
    let (echo, _task) = echo_server().await;
    // (agent, ClientVersion, client NOPs, stays alive)
    let cases = [
        ("3.1.1000.0", None, true, true),
        ("3.1.1000.0", None, false, false),
        ("3.1.1446.0", None, false, true),
        ("3.1.1575.0", Some("1.2.331.0"), false, false),
        ("3.3.1802.0", None, false, true),
    ];
    let runs = cases.map(|(agent, client, nops, alive)| async move {
        let fake = start_port(agent, echo, keepalive).await;
        let mut options = Options {
            smux_keepalive: nops.then_some(std::time::Duration::from_millis(333)),
            ..Options::default()
        };
        if let Some(client) = client {
            options.client_version = client.into();
        }
        let session = connect_mux(&fake, options).await;
        assert_eq!(echo_once(&session, b"before").await, b"before");
        tokio::time::sleep(idle).await;
        let label = format!("agent {agent}, client {client:?}, NOPs {nops}");
        if alive {
            assert!(session.is_alive(), "{label}: the idle session died");
            assert_eq!(echo_once(&session, b"after").await, b"after", "{label}");
            session.close().await.unwrap();
        } else {
            // Ended by the agent's keep-alive, well before the safety net.
            let ended =
                tokio::time::timeout(std::time::Duration::from_secs(20), session.join()).await;
            assert!(
                ended.is_ok(),
                "{label}: the session outlived the keep-alive timeout"
            );
        }
    });
    futures_util::future::join_all(runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_from_either_side_closes_the_whole_target_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let fake = start_port("3.3.1802.0", target, SmuxKeepAlive::default()).await;
    let session = connect_mux(&fake, Options::default()).await;

    // The client's FIN: the target reads EOF, and what it writes afterwards
    // never reaches the client (no half-close).
    let mut stream = session.open_stream().await.unwrap();
    stream.write_all(b"request").await.unwrap();
    stream.shutdown().await.unwrap();
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut request = Vec::new();
    conn.read_to_end(&mut request).await.unwrap();
    assert_eq!(request, b"request");
    let _ = conn.write_all(b"late answer").await;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"", "the agent closed the connection at the FIN");

    // The target's FIN: the client reads EOF, and the target's socket is
    // closed for reading too.
    let mut stream = session.open_stream().await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut hello = [0u8; 5];
    conn.read_exact(&mut hello).await.unwrap();
    conn.write_all(b"bye").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut bye = Vec::new();
    stream.read_to_end(&mut bye).await.unwrap();
    assert_eq!(bye, b"bye");
    let _ = stream.write_all(b"more").await;
    let mut rest = Vec::new();
    let read = conn.read_to_end(&mut rest).await;
    assert!(
        rest.is_empty(),
        "the target received {rest:?} after its FIN: {read:?}"
    );
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_port_error_fails_the_stream_whose_fin_follows_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let fake = start_port("3.3.1802.0", target, SmuxKeepAlive::default()).await;
    let session = connect_mux(&fake, Options::default()).await;
    // The first stream's target accepts and stays silent for now…
    let mut first = session.open_stream().await.unwrap();
    let (mut conn, _) = listener.accept().await.unwrap();
    // … then the port closes, so the second stream's dial is refused.
    drop(listener);
    let mut second = session.open_stream().await.unwrap();
    let mut buf = Vec::new();
    let error = second.read_to_end(&mut buf).await.unwrap_err();
    assert!(error.to_string().contains("could not connect"), "{error}");
    // The older, silent stream is untouched.
    conn.write_all(b"still here").await.unwrap();
    let mut answer = [0u8; 10];
    first.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"still here");
    session.close().await.unwrap();
}
