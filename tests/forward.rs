//! `sm-ssh forward` end to end: 8 concurrent HTTP clients through each
//! document, spread over several sessions, and the fallback to one
//! AWS-StartSSHSession per connection when port forwarding is denied.

mod common;

use std::net::SocketAddr;

use common::{assert_exit, seed_with, start_forward, training_instance, Env, Forward};
use sm_ssh_integration::world::{Instance, Seed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const INSTANCE: &str = "mi-0123456789abcdef0";
const CLIENTS: usize = 8;

/// A tiny HTTP/1.1 server that answers every request with its own path, so
/// each client can tell its answer from the others'.
async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                // A body large enough to span many data-channel messages.
                let body = format!("{path}\n{}", "x".repeat(50_000));
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

/// GET /<n> through `port`; returns the body.
async fn get(port: u16, n: usize) -> String {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request =
        format!("GET /client-{n} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Runs `clients` concurrent GETs and checks every body.
fn hammer(env: &Env, port: u16) {
    env.runtime().block_on(async {
        let tasks: Vec<_> = (0..CLIENTS).map(|n| tokio::spawn(get(port, n))).collect();
        for (n, task) in tasks.into_iter().enumerate() {
            let body = task.await.unwrap();
            assert!(
                body.starts_with(&format!("/client-{n}\n")),
                "client {n} got another answer"
            );
            assert_eq!(body.len(), format!("/client-{n}\n").len() + 50_000);
        }
    });
}

/// One local port forwarded to the instance's 8080 with the
/// AWS-StartPortForwardingSession document.
fn forward_over_port_document(env: &Env) -> Forward {
    start_forward(
        env,
        &[
            INSTANCE,
            "-L",
            "0:localhost:8080",
            "--document",
            "AWS-StartPortForwardingSession",
        ],
        1,
    )
}

fn env_with_http(configure: impl FnOnce(&mut Seed)) -> (Env, SocketAddr) {
    let mut seed = seed_with(vec![]);
    configure(&mut seed);
    let env = Env::start(seed);
    let http = env.runtime().block_on(http_server());
    let mut instance: Instance = training_instance(INSTANCE, "web-job", 1_700_000_000);
    instance.ports.insert(8080, http);
    instance
        .remote_hosts
        .insert(format!("web.internal:{}", 80), http);
    env.add_instance(instance);
    (env, http)
}

/// Counts the successful StartSession calls with `document`, and the
/// TerminateSession calls.
fn session_calls(env: &Env, document: &str) -> (usize, usize) {
    let events = env.fake.events();
    let started = events
        .iter()
        .filter(|e| e.action == "ssm:StartSession" && e.error.is_none())
        .filter(|e| e.document.as_deref() == Some(document))
        .count();
    let terminated = events
        .iter()
        .filter(|e| e.action == "ssm:TerminateSession" && e.error.is_none())
        .count();
    (started, terminated)
}

#[test]
fn port_forwarding_document_shares_one_session() {
    let (env, _) = env_with_http(|_| {});
    let forward = forward_over_port_document(&env);
    assert!(forward.stderr().contains("AWS-StartPortForwardingSession"));
    hammer(&env, forward.ports[0]);
    hammer(&env, forward.ports[0]);
    let (status, stderr) = forward.interrupt();
    assert!(status.success(), "{status}\n{stderr}");
    let (started, terminated) = session_calls(&env, "AWS-StartPortForwardingSession");
    assert_eq!(started, 1, "connections share the session");
    assert_eq!(
        terminated,
        1,
        "Ctrl-C terminates the session\n{stderr}\n{:#?}",
        env.fake.events()
    );
}

#[test]
fn remote_host_document_reaches_a_host_behind_the_instance() {
    let (env, _) = env_with_http(|_| {});
    let forward = start_forward(&env, &[INSTANCE, "-L", "0:web.internal:80"], 1);
    hammer(&env, forward.ports[0]);
    let (status, stderr) = forward.interrupt();
    assert!(status.success(), "{status}\n{stderr}");
    let (started, terminated) = session_calls(&env, "AWS-StartPortForwardingSessionToRemoteHost");
    assert_eq!((started, terminated), (1, 1));
}

#[test]
fn sessions_flag_spreads_connections() {
    let (env, _) = env_with_http(|_| {});
    let forward = start_forward(
        &env,
        &[
            INSTANCE,
            "-L",
            "0:localhost:8080",
            "-L",
            "0:localhost:8080",
            "--sessions",
            "4",
        ],
        2,
    );
    hammer(&env, forward.ports[0]);
    hammer(&env, forward.ports[1]);
    let (status, stderr) = forward.interrupt();
    assert!(status.success(), "{status}\n{stderr}");
    let (started, terminated) = session_calls(&env, "AWS-StartPortForwardingSession");
    assert_eq!(
        started, 4,
        "one session per slot, shared by both forwards\n{stderr}"
    );
    assert_eq!(terminated, 4);
}

#[test]
fn ssh_document_opens_a_session_per_connection() {
    let (env, _) = env_with_http(|_| {});
    let forward = start_forward(
        &env,
        &[
            INSTANCE,
            "-L",
            "0:localhost:8080",
            "--document",
            "AWS-StartSSHSession",
        ],
        1,
    );
    hammer(&env, forward.ports[0]);
    let (status, stderr) = forward.interrupt();
    assert!(status.success(), "{status}\n{stderr}");
    let (started, _) = session_calls(&env, "AWS-StartSSHSession");
    assert_eq!(started, CLIENTS);
}

#[test]
fn denied_port_forwarding_falls_back_to_the_ssh_document() {
    let (env, _) = env_with_http(|seed| {
        // The sagemaker-ssh-helper client policy: only AWS-StartSSHSession.
        seed.denials
            .documents
            .insert("AWS-StartPortForwardingSession".into());
        seed.denials
            .documents
            .insert("AWS-StartPortForwardingSessionToRemoteHost".into());
    });
    let forward = start_forward(&env, &[INSTANCE, "-L", "0:localhost:8080"], 1);
    hammer(&env, forward.ports[0]);
    let (status, stderr) = forward.interrupt();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("AWS-StartSSHSession"), "{stderr}");
    let (started, _) = session_calls(&env, "AWS-StartSSHSession");
    assert_eq!(started, CLIENTS);
}

#[test]
fn a_remote_host_needs_a_port_forwarding_document() {
    let (env, _) = env_with_http(|_| {});
    let output = env.run([
        "forward",
        INSTANCE,
        "-L",
        "0:web.internal:80",
        "--document",
        "AWS-StartSSHSession",
    ]);
    let (_, stderr) = assert_exit(&output, 2);
    assert!(stderr.contains("web.internal"), "{stderr}");
}

#[test]
fn ended_sessions_are_replaced_on_the_next_connection() {
    let (env, _) = env_with_http(|_| {});
    let forward = forward_over_port_document(&env);
    hammer(&env, forward.ports[0]);
    // The service ends the session (as its idle timeout would).
    {
        let world = env.fake.world();
        let world = world.lock().unwrap();
        for session in world.sessions.values() {
            session.terminated.send_replace(true);
        }
    }
    // Until the forward notices, a connection may fail; after that, new sessions serve.
    let mut recovered = false;
    for _ in 0..50 {
        let sessions = session_calls(&env, "AWS-StartPortForwardingSession").0;
        if sessions == 2 {
            recovered = true;
            break;
        }
        // A probe that gives up rather than hang on a half-dead session.
        if let Ok(mut probe) = std::net::TcpStream::connect(("127.0.0.1", forward.ports[0])) {
            let _ = probe.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = std::io::Write::write_all(&mut probe, b"GET /probe HTTP/1.1\r\n\r\n");
            let _ = std::io::Read::read_to_end(&mut probe, &mut Vec::new());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        recovered,
        "no new session was started:\n{}",
        forward.stderr()
    );
    hammer(&env, forward.ports[0]);
    let (status, stderr) = forward.interrupt();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("starting new ones"), "{stderr}");
}
