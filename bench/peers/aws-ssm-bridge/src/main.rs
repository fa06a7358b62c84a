//! `aws-ssm-bridge-peer`: the `aws-ssm-bridge` crate driven the way sm-ssh is
//! driven, so the bench harness can compare the two against the same fake.
//!
//! Usage:
//!   aws-ssm-bridge-peer forward <target> <remote-port>
//!       Starts an `AWS-StartPortForwardingSession`, listens on 127.0.0.1:0,
//!       prints `listening <port>` on stdout, forwards until stdin closes.
//!   aws-ssm-bridge-peer ssh <target> [<port>]
//!       Starts an `AWS-StartSSHSession` and bridges stdin/stdout to it
//!       (an ssh ProxyCommand).
//!
//! The AWS configuration comes from the environment (`AWS_ENDPOINT_URL_SSM`,
//! dummy credentials, `AWS_REGION`). The fake's stream URL is plain `ws://` on
//! loopback, hence `EndpointPolicy::AllowAny`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use aws_ssm_bridge::{
    documents::SshSession, EndpointPolicy, PortForwardConfig, PortForwarder, SessionBuilder,
    SessionManager, ShutdownSignal,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sdk = aws_config::load_from_env().await;
    let manager = SessionManager::from_conf(&sdk);
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["forward", target, port] => forward(&manager, target, port.parse()?).await,
        ["ssh", target] => ssh(&manager, target, 22).await,
        ["ssh", target, port] => ssh(&manager, target, port.parse()?).await,
        _ => bail!("usage: aws-ssm-bridge-peer forward <target> <port> | ssh <target> [<port>]"),
    }
}

async fn forward(manager: &SessionManager, target: &str, port: u16) -> anyhow::Result<()> {
    let session = SessionBuilder::new(target)
        .port_forward(port)
        .endpoint_policy(EndpointPolicy::AllowAny)
        .start_with(manager)
        .await
        .context("start session")?;
    session.wait_ready().await.context("handshake")?;
    let session = Arc::new(session);
    let forwarder = PortForwarder::bind(PortForwardConfig::default()).await?;
    println!("listening {}", forwarder.local_addr().port());
    let shutdown = ShutdownSignal::new();
    // The harness ends the peer by closing its stdin.
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        stop.shutdown();
    });
    forwarder.forward(session.clone(), shutdown).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), session.terminate()).await;
    Ok(())
}

async fn ssh(manager: &SessionManager, target: &str, port: u16) -> anyhow::Result<()> {
    let session = SessionBuilder::new(target)
        .document(SshSession::on_port(port))
        .endpoint_policy(EndpointPolicy::AllowAny)
        .start_with(manager)
        .await
        .context("start session")?;
    let session = Arc::new(session);
    let mut output = session.output();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(chunk) = output.next().await {
            if stdout.write_all(&chunk).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stdin.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        session.send(buf[..n].to_vec()).await?;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), session.terminate()).await;
    writer.abort();
    Ok(())
}
