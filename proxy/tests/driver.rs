//! The tokio driver against a loopback websocket agent: byte streams end to
//! end, reconnects (close 1000 Bye, cut sockets, silent sockets), session end,
//! refusals, and smux port forwarding.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sm_ssh_proxy::payload::flag;
use sm_ssh_proxy::{bridge, forward_basic, MuxPool, MuxSession, Options, SessionError};
use support::ws_agent::{Behaviour, FakeAgent, FakeControl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn options() -> Options {
    Options {
        pacing: None,
        reconnect_initial_delay: Duration::from_millis(10),
        reconnect_max_delay: Duration::from_millis(100),
        ..Options::default()
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
}

/// Runs `bridge` with in-memory stdin/stdout: writes `data`, reads the echo,
/// then closes stdin.
async fn echo_through_bridge(
    fake: &Arc<FakeAgent>,
    options: Options,
    data: Vec<u8>,
) -> (Result<sm_ssh_proxy::SessionEnd, SessionError>, Vec<u8>) {
    let control = FakeControl::new(fake);
    let target = fake.start_session();
    let (mut stdin_w, stdin_r) = tokio::io::duplex(64 * 1024);
    let (stdout_w, mut stdout_r) = tokio::io::duplex(64 * 1024);
    let expected = data.len();
    let session = tokio::spawn(bridge(target, control, options, stdin_r, stdout_w));
    let writer = tokio::spawn(async move {
        stdin_w.write_all(&data).await.unwrap();
        stdin_w
    });
    let mut echoed = vec![0u8; expected];
    stdout_r.read_exact(&mut echoed).await.unwrap();
    drop(writer.await.unwrap()); // EOF on stdin
    let end = session.await.unwrap();
    (end, echoed)
}

#[tokio::test]
async fn bridge_carries_bytes_both_ways_and_terminates_on_eof() {
    let fake = FakeAgent::start(Behaviour::default()).await;
    let data = pattern(300_000, 1);
    let (end, echoed) = echo_through_bridge(&fake, options(), data.clone()).await;
    let end = end.unwrap();
    assert_eq!(echoed, data);
    assert_eq!(end.stats.reconnects, 0);
    let record = fake.record.lock().unwrap();
    assert_eq!(record.flags, vec![flag::TERMINATE_SESSION]);
    let open = &record.opens[0];
    assert_eq!(open.message_schema_version, "1.0");
    assert_eq!(open.client_version.as_deref(), Some("1.2.764.0"));
    assert!(open.client_id.is_some());
}

#[tokio::test]
async fn bridge_with_default_pacing_delivers() {
    let fake = FakeAgent::start(Behaviour::default()).await;
    let data = pattern(20_000, 2);
    let options = Options {
        pacing: Options::default().pacing,
        ..options()
    };
    let (end, echoed) = echo_through_bridge(&fake, options, data.clone()).await;
    end.unwrap();
    assert_eq!(echoed, data);
}

#[tokio::test]
async fn websocket_recycling_loses_and_duplicates_nothing() {
    let fake = FakeAgent::start(Behaviour {
        recycle_after: Some(40),
        ..Behaviour::default()
    })
    .await;
    let data = pattern(400_000, 3);
    let (end, echoed) = echo_through_bridge(&fake, options(), data.clone()).await;
    let end = end.unwrap();
    assert_eq!(echoed, data);
    assert!(end.stats.reconnects >= 3, "{:?}", end.stats);
    let record = fake.record.lock().unwrap();
    let client_ids: std::collections::HashSet<_> =
        record.opens.iter().map(|o| o.client_id.clone()).collect();
    assert_eq!(client_ids.len(), 1, "one ClientId across reconnects");
    let request_ids: std::collections::HashSet<_> =
        record.opens.iter().map(|o| o.request_id.clone()).collect();
    assert_eq!(
        request_ids.len(),
        record.opens.len(),
        "a fresh RequestId per open"
    );
}

#[tokio::test]
async fn cut_sockets_are_resumed() {
    let fake = FakeAgent::start(Behaviour {
        cut_after: Some(25),
        ..Behaviour::default()
    })
    .await;
    let data = pattern(150_000, 4);
    let (end, echoed) = echo_through_bridge(&fake, options(), data.clone()).await;
    assert_eq!(echoed, data);
    assert!(end.unwrap().stats.reconnects >= 1);
}

#[tokio::test]
async fn a_silent_socket_is_detected_by_the_pong_deadline() {
    let fake = FakeAgent::start(Behaviour {
        stall_after: Some(10),
        ..Behaviour::default()
    })
    .await;
    let options = Options {
        ping_interval: Duration::from_millis(50),
        pong_timeout: Duration::from_millis(200),
        ..options()
    };
    let data = pattern(100_000, 5);
    let (end, echoed) = echo_through_bridge(&fake, options, data.clone()).await;
    assert_eq!(echoed, data);
    assert!(end.unwrap().stats.reconnects >= 1);
}

#[tokio::test]
async fn channel_closed_ends_the_bridge_with_its_output() {
    let fake = FakeAgent::start(Behaviour {
        close_after: Some((5, "Session terminated by the target".into())),
        ..Behaviour::default()
    })
    .await;
    let control = FakeControl::new(&fake);
    let (mut stdin_w, stdin_r) = tokio::io::duplex(1024);
    let (stdout_w, mut stdout_r) = tokio::io::duplex(1024);
    let session = tokio::spawn(bridge(
        fake.start_session(),
        control,
        options(),
        stdin_r,
        stdout_w,
    ));
    stdin_w.write_all(b"hello").await.unwrap();
    let end = session.await.unwrap().unwrap();
    assert_eq!(end.output, "Session terminated by the target");
    let mut echoed = Vec::new();
    stdout_r.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"hello", "output is flushed before returning");
}

#[tokio::test]
async fn a_refused_token_is_a_clear_error_without_the_token() {
    let fake = FakeAgent::start(Behaviour::default()).await;
    let mut target = fake.start_session();
    target.token = "token-forged-secret".into();
    let result = bridge(
        target,
        FakeControl::new(&fake),
        options(),
        tokio::io::empty(),
        tokio::io::sink(),
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(error, SessionError::TokenRefused);
    assert!(!error.to_string().contains("secret"));
}

#[tokio::test]
async fn reconnect_attempts_are_bounded() {
    let fake = FakeAgent::start(Behaviour {
        cut_after: Some(3),
        refuse_reconnects: true,
        ..Behaviour::default()
    })
    .await;
    let control = FakeControl::new(&fake);
    let options = Options {
        max_reconnects: 3,
        ..options()
    };
    let (mut stdin_w, stdin_r) = tokio::io::duplex(1024);
    let session = tokio::spawn(bridge(
        fake.start_session(),
        control.clone(),
        options,
        stdin_r,
        tokio::io::sink(),
    ));
    for _ in 0..20 {
        if stdin_w.write_all(&[0u8; 512]).await.is_err() {
            break;
        }
    }
    let error = session.await.unwrap().unwrap_err();
    match &error {
        SessionError::Disconnected { attempts: 3, .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(control.resumes.load(Ordering::SeqCst), 3);
    // The first dial and each redial were signed.
    assert_eq!(control.signed.lock().unwrap().len(), 4);
    assert_eq!(fake.record.lock().unwrap().signed_upgrades, [true; 4]);
    let text = error.to_string();
    assert!(text.contains("3 reconnect attempts"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

#[tokio::test]
async fn no_handshake_is_a_timeout() {
    let fake = FakeAgent::start(Behaviour {
        silent: true,
        ..Behaviour::default()
    })
    .await;
    let options = Options {
        handshake_timeout: Duration::from_millis(200),
        ..options()
    };
    let result = bridge(
        fake.start_session(),
        FakeControl::new(&fake),
        options,
        tokio::io::empty(),
        tokio::io::sink(),
    )
    .await;
    assert!(
        matches!(result, Err(SessionError::HandshakeTimeout(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_kms_request_is_refused_as_unsupported() {
    let fake = FakeAgent::start(Behaviour {
        extra_action: Some(json!({"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"k","Challenge":"AA=="}})),
        ..Behaviour::default()
    })
    .await;
    let result = bridge(
        fake.start_session(),
        FakeControl::new(&fake),
        options(),
        tokio::io::empty(),
        tokio::io::sink(),
    )
    .await;
    match result {
        Err(SessionError::Unsupported(why)) => assert!(why.contains("KMS"), "{why}"),
        other => panic!("{other:?}"),
    }
}

fn forwarding() -> Behaviour {
    Behaviour {
        properties: Some(
            json!({"localPortNumber":"0","portNumber":"80","type":"LocalPortForwarding"}),
        ),
        ..Behaviour::default()
    }
}

async fn echo_stream(stream: &mut sm_ssh_proxy::MuxStream, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let read = async {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        out
    };
    tokio::join!(write, read).1
}

#[tokio::test]
async fn mux_streams_are_independent_and_survive_recycling() {
    let fake = FakeAgent::start(Behaviour {
        recycle_after: Some(60),
        ..forwarding()
    })
    .await;
    let control = FakeControl::new(&fake);
    let session = Arc::new(
        MuxSession::connect(fake.start_session(), control.clone(), options())
            .await
            .unwrap(),
    );
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let session = session.clone();
            tokio::spawn(async move {
                let data = pattern(60_000 + usize::from(i) * 1000, i);
                let mut stream = session.open_stream().await.unwrap();
                assert_eq!(echo_stream(&mut stream, &data).await, data);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let session = Arc::into_inner(session).unwrap();
    assert!(session.stats().reconnects >= 1);
    let end = session.close().await.unwrap();
    assert!(end.stats.reconnects >= 1);
    assert_eq!(
        fake.record.lock().unwrap().flags,
        vec![flag::TERMINATE_SESSION]
    );
    assert_eq!(control.terminated.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn connect_to_port_error_fails_only_that_stream() {
    let fake = FakeAgent::start(Behaviour {
        fail_dials: 1,
        ..forwarding()
    })
    .await;
    let session = MuxSession::connect(fake.start_session(), FakeControl::new(&fake), options())
        .await
        .unwrap();
    let mut failed = session.open_stream().await.unwrap();
    let mut buf = [0u8; 16];
    let error = failed.read(&mut buf).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("could not connect to the destination port"),
        "{error}"
    );
    let mut good = session.open_stream().await.unwrap();
    assert_eq!(echo_stream(&mut good, b"still alive").await, b"still alive");
    session.close().await.unwrap();
}

#[tokio::test]
async fn an_ssh_session_is_not_taken_for_port_forwarding() {
    let fake = FakeAgent::start(Behaviour::default()).await;
    let result =
        MuxSession::connect(fake.start_session(), FakeControl::new(&fake), options()).await;
    assert!(matches!(result, Err(SessionError::Unsupported(_))));
}

#[tokio::test]
async fn a_pool_spreads_streams_over_its_sessions() {
    let fake = FakeAgent::start(forwarding()).await;
    let control = FakeControl::new(&fake);
    let targets = (0..3).map(|_| fake.start_session()).collect();
    let pool = Arc::new(MuxPool::connect(targets, control, options()).await.unwrap());
    let tasks: Vec<_> = (0..6u8)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let data = pattern(20_000, i);
                let mut stream = pool.open_stream().await.unwrap();
                assert_eq!(echo_stream(&mut stream, &data).await, data);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let pool = Arc::into_inner(pool).unwrap();
    for session in pool.sessions() {
        assert!(
            session.stats().protocol.messages_sent > 0,
            "every session carried data"
        );
    }
    assert!(pool.close().await.into_iter().all(|r| r.is_ok()));
}

#[tokio::test]
async fn dropping_a_mux_session_ends_it_once_its_streams_are_done() {
    let fake = FakeAgent::start(forwarding()).await;
    let control = FakeControl::new(&fake);
    let session = MuxSession::connect(fake.start_session(), control.clone(), options())
        .await
        .unwrap();
    let mut stream = session.open_stream().await.unwrap();
    drop(session);
    assert_eq!(echo_stream(&mut stream, b"last one").await, b"last one");
    drop(stream);
    // The session task sends TerminateSession and calls the API by itself.
    while control.terminated.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fake.record.lock().unwrap().flags,
        vec![flag::TERMINATE_SESSION]
    );
}

#[tokio::test]
async fn an_unreachable_stream_url_is_a_dial_error_naming_the_host_only() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fake = FakeAgent::start(Behaviour::default()).await;
    let mut target = fake.start_session();
    target.stream_url = format!("ws://127.0.0.1:{port}/v1/data-channel/s?role=publish_subscribe");
    let error = bridge(
        target,
        FakeControl::new(&fake),
        options(),
        tokio::io::empty(),
        tokio::io::sink(),
    )
    .await
    .unwrap_err();
    match &error {
        SessionError::Dial { host, .. } => assert_eq!(host, &format!("127.0.0.1:{port}")),
        other => panic!("{other:?}"),
    }
    let text = error.to_string();
    assert!(
        !text.contains("secret") && !text.contains("role="),
        "{text}"
    );
}

/// Options that make the agent choose basic port forwarding (§6.1).
fn basic_options() -> Options {
    Options {
        client_version: "1.0.0.0".into(),
        ..options()
    }
}

async fn wait_for_flags(fake: &FakeAgent, count: usize) {
    while fake.record.lock().unwrap().flags.len() < count {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One local connection: sends `data`, reads as many bytes back, closes.
async fn echo_connection(addr: std::net::SocketAddr, data: &[u8]) -> Vec<u8> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let write = async { w.write_all(data).await.unwrap() };
    let read = async {
        let mut out = vec![0u8; data.len()];
        r.read_exact(&mut out).await.unwrap();
        out
    };
    tokio::join!(write, read).1
}

#[tokio::test]
async fn basic_forwarding_serves_connections_one_after_another() {
    let fake = FakeAgent::start(forwarding()).await;
    let control = FakeControl::new(&fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let session = tokio::spawn(forward_basic(
        fake.start_session(),
        control.clone(),
        basic_options(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    for (n, len) in [(1usize, 200_000usize), (2, 3_000)] {
        let data = pattern(len, n as u8);
        assert_eq!(echo_connection(addr, &data).await, data, "connection {n}");
        wait_for_flags(&fake, n).await;
    }
    stop.send(()).unwrap();
    let end = session.await.unwrap().unwrap();
    assert_eq!(end.stats.reconnects, 0);
    assert_eq!(
        fake.record.lock().unwrap().flags,
        vec![
            flag::DISCONNECT_TO_PORT,
            flag::DISCONNECT_TO_PORT,
            flag::TERMINATE_SESSION
        ]
    );
    assert_eq!(control.terminated.lock().unwrap().len(), 1);
    assert_eq!(
        fake.record.lock().unwrap().opens[0]
            .client_version
            .as_deref(),
        Some("1.0.0.0")
    );
}

#[tokio::test]
async fn basic_forwarding_holds_agent_data_for_the_next_connection() {
    let fake = FakeAgent::start(Behaviour {
        greeting: b"SSH-2.0-Fake\r\n".to_vec(),
        ..forwarding()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = fake.start_session();
    let session_id = target.session_id.clone();
    let session = tokio::spawn(forward_basic(
        target,
        FakeControl::new(&fake),
        basic_options(),
        listener,
        std::future::pending(),
    ));
    // The greeting arrives and is acknowledged before anyone connects.
    while !fake.all_acked(&session_id) || fake.record.lock().unwrap().opens.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut greeting = vec![0u8; 14];
    stream.read_exact(&mut greeting).await.unwrap();
    assert_eq!(greeting, b"SSH-2.0-Fake\r\n");
    stream.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    session.abort();
}

#[tokio::test]
async fn basic_forwarding_refuses_an_smux_session_and_mux_points_to_basic() {
    let fake = FakeAgent::start(forwarding()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = forward_basic(
        fake.start_session(),
        FakeControl::new(&fake),
        options(),
        listener,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, SessionError::Unsupported(m) if m.contains("MuxSession")),
        "{error}"
    );
    let error = MuxSession::connect(
        fake.start_session(),
        FakeControl::new(&fake),
        basic_options(),
    )
    .await
    .err()
    .expect("basic mode is not smux");
    assert!(
        matches!(&error, SessionError::Unsupported(m) if m.contains("forward_basic")),
        "{error}"
    );
}
