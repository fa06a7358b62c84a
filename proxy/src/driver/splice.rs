//! One local TCP connection carried over one smux stream, with the policy
//! for a local half-close: the agent has none (a FIN closes the target
//! connection both ways, port_mux.go `handleDataTransfer`), so a client that
//! shuts down its sending side (`nc -N`, some HTTP/1.0 clients) keeps the
//! stream open while the target answers, and the FIN goes only once the
//! target has been quiet for the grace period.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout, Instant};

use super::MuxStream;

const CHUNK: usize = 16 * 1024;

/// Copies `local` ↔ `stream` until the connection is over:
///
/// * the target ends (the agent's FIN): what it sent is written, `local` is
///   shut down, and its further input is read and dropped for at most `grace`
///   (closing a socket with unread input would reset it and could destroy
///   the answer still in flight to the client);
/// * `local` ends its input first: the stream stays open; the FIN goes once
///   nothing has come from the target for `grace`.
///
/// Fails with the stream's error (e.g. the agent could not dial the target).
pub async fn splice<L>(local: L, stream: MuxStream, grace: Duration) -> io::Result<()>
where
    L: AsyncRead + AsyncWrite + Unpin,
{
    let (mut local_read, mut local_write) = tokio::io::split(local);
    let (mut remote_read, mut remote_write) = tokio::io::split(stream);
    let last_output = Mutex::new(Instant::now());
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = remote_read.read(&mut buf).await?;
            if n == 0 {
                let _ = local_write.shutdown().await;
                return io::Result::Ok(());
            }
            *last_output.lock().expect("clock") = Instant::now();
            local_write.write_all(&buf[..n]).await?;
        }
    };
    let up = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = local_read.read(&mut buf).await?;
            if n == 0 {
                return io::Result::Ok(remote_write);
            }
            remote_write.write_all(&buf[..n]).await?;
        }
    };
    tokio::pin!(down, up);
    let mut remote_write = tokio::select! {
        ended = &mut down => {
            ended?;
            let _ = timeout(grace, &mut up).await;
            return Ok(());
        }
        ended = &mut up => ended?,
    };
    // The client half-closed: the grace starts now and runs on while the target sends.
    *last_output.lock().expect("clock") = Instant::now();
    loop {
        let quiet_at = *last_output.lock().expect("clock") + grace;
        tokio::select! {
            ended = &mut down => return ended,
            () = sleep_until(quiet_at) => {
                if Instant::now() >= *last_output.lock().expect("clock") + grace {
                    break;
                }
            }
        }
    }
    remote_write.shutdown().await?;
    // The agent answers the FIN with its own once the target is closed.
    timeout(grace, down).await.unwrap_or(Ok(()))
}
