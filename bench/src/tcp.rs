//! What sits behind the fake instance's ports, and the clients that drive it.
//!
//! The bench target speaks a 9-byte request: `U` + u64 length (big-endian) to
//! upload (it reads and checks that many pattern bytes, then answers one
//! byte), or `D` + u64 length to download (it writes that many pattern bytes
//! and closes). Every byte is checked against the pattern on the receiving
//! side, so loss, duplication or corruption in the tunnel fails the run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The pattern's period: prime, so it never lines up with chunk sizes.
const PERIOD: usize = 251;
const CHUNK: usize = 64 * 1024;

/// Byte `i` of every transfer.
fn pattern_buffer() -> Vec<u8> {
    // CHUNK + PERIOD bytes so any window of CHUNK bytes starting at offset % PERIOD exists.
    (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect()
}

fn window(pattern: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = (offset % PERIOD as u64) as usize;
    &pattern[start..start + len]
}

/// A loopback server on a port of its own choosing, stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The upload sink / download source.
pub async fn bench_target() -> anyhow::Result<Server> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Err(e) = serve(stream).await {
                    eprintln!("bench target: {e:#}");
                }
            });
        }
    });
    Ok(Server { addr, task })
}

async fn serve(mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut request = [0u8; 9];
    if let Err(e) = stream.read_exact(&mut request).await {
        // Readiness probes connect and close without a request.
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Ok(()),
            _ => Err(e.into()),
        };
    }
    let len = u64::from_be_bytes(request[1..].try_into()?);
    match request[0] {
        b'U' => {
            receive_checked(&mut stream, len, &mut Vec::new()).await?;
            stream.write_all(b"k").await?;
        }
        b'D' => send_pattern(&mut stream, len).await?,
        other => bail!("unknown request {other}"),
    }
    stream.shutdown().await?;
    Ok(())
}

/// A server that writes an SSH banner on accept and then holds the connection:
/// what the setup measurement waits for, free of sshd's own start-up cost.
pub async fn banner_server() -> anyhow::Result<Server> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(b"SSH-2.0-sm-ssh-bench\r\n").await;
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    Ok(Server { addr, task })
}

async fn send_pattern(stream: &mut (impl AsyncWriteExt + Unpin), len: u64) -> anyhow::Result<()> {
    let pattern = pattern_buffer();
    let mut sent = 0u64;
    while sent < len {
        let n = CHUNK.min((len - sent) as usize);
        stream.write_all(window(&pattern, sent, n)).await?;
        sent += n as u64;
    }
    Ok(())
}

/// Reads exactly `len` pattern bytes, noting (time, bytes so far) at every
/// read: on failure `arrivals` still says how far the intact stream got.
async fn receive_checked(
    stream: &mut (impl AsyncReadExt + Unpin),
    len: u64,
    arrivals: &mut Vec<(Instant, u64)>,
) -> anyhow::Result<()> {
    let pattern = pattern_buffer();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < len {
        let want = CHUNK.min((len - got) as usize);
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            bail!("stream ended after {got} of {len} bytes");
        }
        if buf[..n] != *window(&pattern, got, n) {
            bail!("corrupted data at byte {got}..{}", got + n as u64);
        }
        got += n as u64;
        arrivals.push((Instant::now(), got));
    }
    Ok(())
}

/// One finished transfer.
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
    /// (time, bytes received so far) at every read; downloads only.
    pub arrivals: Vec<(Instant, u64)>,
}

impl Transfer {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Direction of a transfer, seen from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    Upload,
    Download,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

/// Moves `len` bytes through a tunnel that reaches the bench target at `addr`.
/// Timing starts before the request is written and ends when the last byte
/// (download) or the sink's confirmation (upload) arrives.
pub async fn transfer(
    addr: SocketAddr,
    direction: Direction,
    len: u64,
) -> anyhow::Result<Transfer> {
    let mut arrivals = Vec::new();
    transfer_noting(addr, direction, len, &mut arrivals).await
}

/// [`transfer`], keeping the download's arrivals even when it fails.
pub async fn transfer_noting(
    addr: SocketAddr,
    direction: Direction,
    len: u64,
    arrivals: &mut Vec<(Instant, u64)>,
) -> anyhow::Result<Transfer> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to the tunnel at {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.split();
    transfer_over(&mut r, &mut w, direction, len, arrivals).await
}

/// [`transfer_noting`] over any byte stream that reaches the bench target
/// (a TCP connection, or a ProxyCommand's stdout and stdin).
pub async fn transfer_over(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    direction: Direction,
    len: u64,
    arrivals: &mut Vec<(Instant, u64)>,
) -> anyhow::Result<Transfer> {
    let mut request = [0u8; 9];
    request[1..].copy_from_slice(&len.to_be_bytes());
    let start = Instant::now();
    match direction {
        Direction::Upload => {
            request[0] = b'U';
            to.write_all(&request).await?;
            send_pattern(to, len).await?;
            to.flush().await?;
            let mut ok = [0u8; 1];
            from.read_exact(&mut ok)
                .await
                .context("the sink did not confirm the upload")?;
        }
        Direction::Download => {
            request[0] = b'D';
            to.write_all(&request).await?;
            to.flush().await?;
            receive_checked(from, len, arrivals).await?;
        }
    }
    Ok(Transfer {
        bytes: len,
        elapsed: start.elapsed(),
        arrivals: std::mem::take(arrivals),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn direct_transfers_are_checked() {
        let target = bench_target().await.unwrap();
        for direction in [Direction::Upload, Direction::Download] {
            let t = transfer(target.addr, direction, 1_000_003).await.unwrap();
            assert_eq!(t.bytes, 1_000_003);
        }
        let t = transfer(target.addr, Direction::Download, 200_000)
            .await
            .unwrap();
        assert_eq!(t.arrivals.last().unwrap().1, 200_000);
    }
}
