//! The client engine of `proxy/` against the fake data plane: two
//! independent implementations of the protocol carrying bytes through a TCP
//! echo, cleanly and under every relay fault at once.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sm_ssh_integration::auth::{sign_headers, Credential, STATIC_KEY};
use sm_ssh_integration::datachannel::serve_router;
use sm_ssh_integration::world::{
    DirectionFaults, Faults, Instance, Pacing, Session, SharedWorld, World,
};
use sm_ssh_proxy::{bridge, ControlError, Options, SessionControl, StreamTarget};
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

async fn start(pacing: Pacing, faults: Faults) -> Fake {
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
    let instance = Instance {
        id: INSTANCE.into(),
        ports: BTreeMap::from([(22, echo_addr)]),
        ..Instance::default()
    };
    let (terminated, _) = watch::channel(false);
    let session = Session {
        id: SESSION.into(),
        target: INSTANCE.into(),
        document: "AWS-StartSSHSession".into(),
        properties: serde_json::json!({"portNumber": "22"}),
        unused_tokens: HashSet::from(["token-0".to_string()]),
        terminated,
    };
    let world = World {
        instances: BTreeMap::from([(INSTANCE.to_string(), instance)]),
        sessions: [(SESSION.to_string(), session)].into(),
        pacing,
        faults,
        ..World::default()
    };
    let world: SharedWorld = Arc::new(Mutex::new(world));
    let (addr, server) = serve_router(world.clone()).await.unwrap();
    Fake {
        world,
        addr,
        tasks: vec![echo_task, server],
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

    /// Signed as sm-ssh signs, with the static key every world knows.
    async fn upgrade_headers(
        &self,
        stream_url: &str,
    ) -> Result<Vec<(String, String)>, ControlError> {
        let (access_key_id, secret) = STATIC_KEY;
        let credential = Credential {
            access_key_id: access_key_id.into(),
            secret_access_key: secret.into(),
            session_token: None,
            expires: None,
        };
        sign_headers(stream_url, &[], &credential, "us-east-1", SystemTime::now())
            .map_err(ControlError::fatal)
    }
}

/// Echoes `size` bytes through a bridged session and checks every byte.
/// The client paces itself as sm-ssh does unless the fake is unconstrained.
async fn echo_through(fake: &Fake, size: usize) {
    let unconstrained = fake.world.lock().unwrap().pacing == Pacing::Unconstrained;
    let url = format!(
        "ws://{}/v1/data-channel/{SESSION}?role=publish_subscribe",
        fake.addr
    );
    let control = Arc::new(Control {
        world: fake.world.clone(),
        url: url.clone(),
        issued: Mutex::new(0),
    });
    let target = StreamTarget {
        session_id: SESSION.into(),
        stream_url: url,
        token: "token-0".into(),
    };
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
