//! A moto server (the Python AWS emulator) for tests of IAM, STS, SageMaker and
//! CloudWatch Logs calls: started on a free loopback port, killed on drop.
//!
//! `scripts/test` installs moto and exports `SM_SSH_TEST_MOTO`, the path of
//! its `moto_server` executable.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The environment variable naming the `moto_server` executable.
pub const MOTO_ENV: &str = "SM_SSH_TEST_MOTO";

/// How long moto may take to answer (it starts in about half a second, but a
/// busy 2-core CI machine building other crates is much slower).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `moto_server`, reachable at [`MotoServer::endpoint`].
pub struct MotoServer {
    child: Child,
    addr: SocketAddr,
}

impl MotoServer {
    /// Starts `$SM_SSH_TEST_MOTO -H 127.0.0.1 -p <free port>` with AWS-managed
    /// IAM policies loaded, and waits until it answers HTTP.
    pub fn start() -> anyhow::Result<MotoServer> {
        let program = std::env::var_os(MOTO_ENV).with_context(|| {
            format!(
                "{MOTO_ENV} is not set: it names the moto_server executable these tests need; \
                 run the tests with scripts/test, which installs moto and sets it"
            )
        })?;
        let port = free_port()?;
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "could not run {MOTO_ENV}={}; run scripts/test to install moto",
                    program.to_string_lossy()
                )
            })?;
        let mut server = MotoServer {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        };
        server.wait_until_ready()?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL[_<SERVICE>]`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Wipes all state (`POST /moto-api/reset`), so a test can reseed.
    pub fn reset(&self) -> anyhow::Result<()> {
        let status = http_status(self.addr, "POST", "/moto-api/reset").context("resetting moto")?;
        if status != 200 {
            bail!("moto answered {status} to POST /moto-api/reset");
        }
        Ok(())
    }

    fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("moto_server exited before answering ({status})");
            }
            if http_status(self.addr, "GET", "/moto-api/").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "moto_server did not answer on {} within {:?}",
                    self.addr,
                    START_TIMEOUT
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port the OS says is free now; moto binds it a moment later.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The status code of one bodyless HTTP/1.0 request, so readiness needs no
/// HTTP client crate.
fn http_status(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head = String::from_utf8_lossy(&response);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response from {addr}"))?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_resets_and_stops() {
        if std::env::var_os(MOTO_ENV).is_none() {
            // Without moto the error must say how to get it.
            let error = MotoServer::start().err().expect("no moto, no server");
            assert!(format!("{error:#}").contains("scripts/test"));
            return;
        }
        let server = MotoServer::start().expect("moto starts");
        assert!(server.endpoint().starts_with("http://127.0.0.1:"));
        assert_eq!(http_status(server.addr, "GET", "/moto-api/").unwrap(), 200);
        server.reset().unwrap();
        let addr = server.addr;
        drop(server);
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    }
}
