//! Basic (non-smux) port forwarding of `proxy/` against the fake agent: the
//! client reports ClientVersion 1.0.0.0, so the agent runs basic mode; two
//! local connections go through one session one after the other, and the agent
//! redials the target for the second after DisconnectToPort.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sm_ssh_integration::datachannel::router;
use sm_ssh_integration::world::{Instance, Session, SharedWorld, World};
use sm_ssh_proxy::{forward_basic, ControlError, Options, SessionControl, StreamTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

const INSTANCE: &str = "mi-0123456789abcdef0";
const SESSION: &str = "alice-0fedcba9876543210";

/// Only TerminateSession is used: nothing here cuts the websocket.
struct Control {
    world: SharedWorld,
}

impl SessionControl for Control {
    async fn resume(&self, _: &str) -> Result<StreamTarget, ControlError> {
        Err(ControlError::fatal("no reconnects in this test"))
    }

    async fn terminate(&self, session_id: &str) -> Result<(), ControlError> {
        if let Some(session) = self.world.lock().unwrap().sessions.get(session_id) {
            session.terminated.send_replace(true);
        }
        Ok(())
    }
}

#[tokio::test]
async fn two_connections_one_after_the_other_through_one_basic_session() {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = dials.clone();
    let echo_task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let (terminated, _) = watch::channel(false);
    let world = World {
        instances: BTreeMap::from([(
            INSTANCE.to_string(),
            Instance {
                id: INSTANCE.into(),
                ports: BTreeMap::from([(8080, echo_addr)]),
                ..Instance::default()
            },
        )]),
        sessions: [(
            SESSION.to_string(),
            Session {
                id: SESSION.into(),
                target: INSTANCE.into(),
                document: "AWS-StartPortForwardingSession".into(),
                properties: serde_json::json!({"portNumber": "8080", "localPortNumber": "0", "type": "LocalPortForwarding"}),
                unused_tokens: HashSet::from(["token-0".to_string()]),
                terminated,
                started: std::time::Instant::now(),
            },
        )]
        .into(),
        ..World::default()
    };
    let world: SharedWorld = Arc::new(Mutex::new(world));
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let app = router(world.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(fake, app).await;
    });

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let target = StreamTarget {
        session_id: SESSION.into(),
        stream_url: format!("ws://{fake_addr}/v1/data-channel/{SESSION}?role=publish_subscribe"),
        token: "token-0".into(),
    };
    let options = Options {
        client_version: "1.0.0.0".into(),
        ..Options::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let control = Arc::new(Control {
        world: world.clone(),
    });
    let session = tokio::spawn(forward_basic(target, control, options, listener, async {
        let _ = stopped.await;
    }));
    for n in 1..=2usize {
        let data: Vec<u8> = (0..20_000 * n).map(|i| (i % 251) as u8 ^ n as u8).collect();
        let stream = tokio::net::TcpStream::connect(local).await.unwrap();
        let (mut r, mut w) = stream.into_split();
        let mut echoed = vec![0u8; data.len()];
        let (written, read) = tokio::join!(w.write_all(&data), r.read_exact(&mut echoed));
        written.unwrap();
        read.unwrap();
        assert!(echoed == data, "connection {n}: echo differs");
        // The agent dialled the target anew for this connection.
        assert_eq!(dials.load(Ordering::SeqCst), n);
    }
    stop.send(()).unwrap();
    session.await.unwrap().expect("the session ends cleanly");
    assert!(*world.lock().unwrap().sessions[SESSION].terminated.borrow());
    echo_task.abort();
    server.abort();
}
