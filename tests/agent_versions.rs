//! `sm-ssh forward` against agents of every age and a slow service: basic
//! port forwarding for agents without smux (real ssh through it), every
//! handshake of `--sessions 8` within the agent's 15 s on a 2 s API, a
//! half-closing client still answered, and a vanished session not resumed
//! a dozen times.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{me, seed_with, start_forward, training_instance, Env};
use sm_ssh_integration::openssh::OpenSshServer;

const INSTANCE: &str = "mi-0a1b2c3d4e5f60719";

fn count(env: &Env, action: &str) -> usize {
    env.fake
        .events()
        .iter()
        .filter(|e| e.action == action && e.error.is_none())
        .count()
}

/// An echo service on loopback, one thread per connection.
fn echo() -> SocketAddr {
    serve(|mut socket| {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = socket.read(&mut buf) {
            if socket.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    })
}

/// A service that reads one line, answers it and closes, like an HTTP
/// server with `Connection: close`.
fn one_answer() -> SocketAddr {
    serve(|mut socket| {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = socket.read(&mut byte) {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
        let _ = socket.write_all(b"answer to ");
        let _ = socket.write_all(&line);
    })
}

fn serve(handle: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for socket in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || handle(socket));
        }
    });
    addr
}

#[test]
fn forward_uses_basic_mode_when_the_agent_has_no_smux() {
    let env = Env::start(seed_with(vec![]));
    let mut instance = training_instance(INSTANCE, "old-job", 1_700_000_000);
    instance.agent_version = "3.0.196.0".into();
    let sandbox = env.fake.add_instance(instance).unwrap();
    let sshd = OpenSshServer::start(&sandbox).expect("sshd starts (install openssh-server)");
    env.fake.map_port(INSTANCE, 22, sshd.addr());
    let key = env.home().join("id_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    std::fs::copy(
        key.with_extension("pub"),
        sandbox.join("etc/ssh/authorized_keys"),
    )
    .unwrap();

    let forward = start_forward(
        &env,
        &[INSTANCE, "-L", "0:localhost:22", "--sessions", "2"],
        1,
    );
    let stderr = forward.stderr();
    assert!(stderr.contains("basic port forwarding"), "{stderr}");
    // Both sessions were started at once; the handshake showed basic mode, so
    // the second one, which cannot be used, was terminated at once.
    assert_eq!(count(&env, "ssm:StartSession"), 2, "{stderr}");
    assert_eq!(count(&env, "ssm:TerminateSession"), 1, "{stderr}");
    // Two ssh connections, one after the other, over the one basic session.
    for word in ["first", "second"] {
        let output = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .arg("-i")
            .arg(&key)
            .args(["-p", &forward.ports[0].to_string()])
            .arg(format!("{}@127.0.0.1", me()))
            .arg(format!("echo {word}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout == format!("{word}\n"),
            "ssh: {}\n{}\nsshd:\n{}\nsm-ssh:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            sshd.log(),
            forward.stderr()
        );
    }
    let (status, stderr) = forward.interrupt();
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(count(&env, "ssm:StartSession"), 2, "{stderr}");
    assert_eq!(count(&env, "ssm:TerminateSession"), 2, "{stderr}");
}

#[test]
fn eight_sessions_complete_their_handshakes_on_a_slow_api() {
    let mut seed = seed_with(vec![]);
    seed.faults.latency_ms = 2000;
    let env = Env::start(seed);
    let mut instance = training_instance(INSTANCE, "slow-job", 1_700_000_000);
    instance.ports.insert(7, echo());
    env.fake.add_instance(instance).unwrap();
    let forward = start_forward(
        &env,
        &[INSTANCE, "-L", "0:localhost:7", "--sessions", "8"],
        1,
    );
    let plane = env.fake.world().lock().unwrap().data_plane.clone();
    // Every handshake completed: the agent closed none ("Handshake timed out").
    assert_eq!(plane.stats().sessions_closed, 0, "{}", forward.stderr());
    assert_eq!(plane.live_sessions().len(), 8, "{}", forward.stderr());
    let (status, stderr) = forward.interrupt();
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(count(&env, "ssm:TerminateSession"), 8, "{stderr}");
}

#[test]
fn a_client_that_half_closes_still_gets_the_answer() {
    let env = Env::start(seed_with(vec![]));
    let mut instance = training_instance(INSTANCE, "web-job", 1_700_000_000);
    instance.ports.insert(7, one_answer());
    env.fake.add_instance(instance).unwrap();
    let forward = start_forward(&env, &[INSTANCE, "-L", "0:localhost:7"], 1);
    // What `nc -N` does: send, shut down the sending side, read to the end.
    let mut socket = TcpStream::connect(("127.0.0.1", forward.ports[0])).unwrap();
    socket.write_all(b"question\n").unwrap();
    socket.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "answer to question\n", "{}", forward.stderr());
    let (status, stderr) = forward.interrupt();
    assert!(status.success(), "{status}\n{stderr}");
}

#[test]
fn a_session_that_no_longer_exists_is_not_resumed_again() {
    let mut seed = seed_with(vec![]);
    // MGS cuts every websocket after 40 messages: the client must resume.
    seed.faults.cut_after_messages = Some(40);
    let env = Env::start(seed);
    let mut instance = training_instance(INSTANCE, "gone-job", 1_700_000_000);
    instance.ports.insert(7, echo());
    env.fake.add_instance(instance).unwrap();
    let forward = start_forward(&env, &[INSTANCE, "-L", "0:localhost:7"], 1);
    // The service forgets the session (its agent runs on): ResumeSession
    // answers DoesNotExistException.
    {
        let world = env.fake.world();
        let mut world = world.lock().unwrap();
        let id = world.sessions.keys().next().unwrap().clone();
        let session = world.sessions.remove(&id).unwrap();
        world.sessions.insert(format!("forgotten-{id}"), session);
    }
    let mut socket = TcpStream::connect(("127.0.0.1", forward.ports[0])).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let chunk = vec![b'x'; 1000];
    for _ in 0..100 {
        if socket.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = socket.read_to_end(&mut Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !forward.stderr().contains("could not resume") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let resumes = env
        .fake
        .events()
        .iter()
        .filter(|e| e.action == "ssm:ResumeSession")
        .count();
    assert_eq!(resumes, 1, "{}", forward.stderr());
}
