//! A realistic network in front of the fake AWS: every endpoint AWS serves
//! on a host name of its own (SSM, STS, SageMaker, the data channel, the rest)
//! gets its own loopback address, a TLS front with a certificate from a CA
//! made at run time, and before that a delaying TCP relay that gives every
//! connection a round-trip time.
//!
//! This kernel has no `netem`, so the relay emulates the path: it opens its
//! upstream connection one RTT after accepting (the SYN / SYN-ACK exchange a
//! real connect waits for) and holds each direction's bytes for half the RTT.
//! Clients that speak first (TLS, HTTP) then see every exchange, the TCP and
//! TLS handshakes included, cost what it costs on a real network.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The round-trip time every relay applies to connections accepted from now
/// on; shared, so one run can measure at several.
#[derive(Clone, Default)]
pub struct Rtt(Arc<AtomicU64>);

impl Rtt {
    pub fn set(&self, rtt: Duration) {
        self.0.store(rtt.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

/// A task that listens until dropped.
struct Listening {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A delaying TCP relay on `bind` (port chosen by the system) to `upstream`.
pub struct Relay(Listening);

/// Bytes read at one moment from one side: the relay's unit of delay.
type Chunk = (Instant, Vec<u8>);

/// How many chunks one direction holds in flight before it stops reading:
/// enough for far more than a TLS window at any RTT the harness uses.
const IN_FLIGHT: usize = 1024;

impl Relay {
    pub async fn start(bind: IpAddr, upstream: SocketAddr, rtt: Rtt) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind((bind, 0))
            .await
            .with_context(|| format!("bind the relay on {bind}"))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rtt = rtt.get();
                tokio::spawn(async move {
                    // The connect's own round trip: the client's first bytes wait in its socket.
                    tokio::time::sleep(rtt).await;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, rtt / 2), pipe(sr, cw, rtt / 2));
                });
            }
        });
        Ok(Relay(Listening { addr, task }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read, in
/// order; EOF is passed on (after the bytes before it) as a write shutdown.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::channel::<Chunk>(IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((read_at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(read_at + delay).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Terminates TLS for `upstream` (the fake's plain HTTP port).
struct TlsFront(Listening);

impl TlsFront {
    async fn start(
        upstream: SocketAddr,
        config: Arc<rustls::ServerConfig>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(TlsFront(Listening { addr, task }))
    }
}

/// The host names AWS serves a region's endpoints on, each here a loopback
/// address of its own (no resolver is involved: see docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Ssm,
    Sts,
    SageMaker,
    /// The data channel, `ssmmessages`.
    Messages,
    /// Every other service (logs, IAM, KMS…), which setup does not call.
    Other,
}

impl Host {
    pub const ALL: [Host; 5] = [
        Host::Ssm,
        Host::Sts,
        Host::SageMaker,
        Host::Messages,
        Host::Other,
    ];

    fn ip(self) -> Ipv4Addr {
        let last = match self {
            Host::Ssm => 2,
            Host::Sts => 3,
            Host::SageMaker => 4,
            Host::Messages => 5,
            Host::Other => 6,
        };
        Ipv4Addr::new(127, 0, 0, last)
    }
}

/// One endpoint: its relay (what clients dial) and the TLS front behind it.
struct Endpoint {
    host: Host,
    relay: Relay,
    _front: TlsFront,
}

/// The network: endpoints for every host in front of one upstream.
pub struct Network {
    pub rtt: Rtt,
    endpoints: Vec<Endpoint>,
    ca_file: PathBuf,
    ca: CertificateDer<'static>,
}

impl Network {
    /// Puts every host in front of `upstream` (the fake's address); the CA
    /// certificate clients must trust is written to `dir/bench-ca.pem`.
    pub async fn start(upstream: SocketAddr, dir: &Path) -> anyhow::Result<Network> {
        let ca = new_ca()?;
        let ca_file = dir.join("bench-ca.pem");
        std::fs::write(&ca_file, ca.pem())?;
        let config = server_config(&ca)?;
        let rtt = Rtt::default();
        let mut endpoints = Vec::new();
        for host in Host::ALL {
            let front = TlsFront::start(upstream, config.clone()).await?;
            let relay = Relay::start(host.ip().into(), front.0.addr, rtt.clone()).await?;
            endpoints.push(Endpoint {
                host,
                relay,
                _front: front,
            });
        }
        Ok(Network {
            rtt,
            endpoints,
            ca_file,
            ca: CertificateDer::from(ca.der().to_vec()),
        })
    }

    /// `host:port` clients dial for `host`.
    pub fn authority(&self, host: Host) -> String {
        let e = self
            .endpoints
            .iter()
            .find(|e| e.host == host)
            .expect("every host has an endpoint");
        e.relay.addr().to_string()
    }

    /// The environment that sends a measured process through the network:
    /// endpoints per service, and trust in the run's CA for rustls
    /// (`SSL_CERT_FILE`) and botocore (`AWS_CA_BUNDLE`).
    pub fn env(&self) -> Vec<(String, String)> {
        let url = |h| format!("https://{}", self.authority(h));
        let mut env = vec![
            ("AWS_ENDPOINT_URL_SSM".to_string(), url(Host::Ssm)),
            ("AWS_ENDPOINT_URL_STS".to_string(), url(Host::Sts)),
            (
                "AWS_ENDPOINT_URL_SAGEMAKER".to_string(),
                url(Host::SageMaker),
            ),
        ];
        for service in ["", "_IAM", "_KMS", "_CLOUDWATCH_LOGS"] {
            env.push((format!("AWS_ENDPOINT_URL{service}"), url(Host::Other)));
        }
        let ca = self.ca_file.to_string_lossy().into_owned();
        env.push(("SSL_CERT_FILE".into(), ca.clone()));
        env.push(("AWS_CA_BUNDLE".into(), ca));
        env
    }
}

fn new_ca() -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "sm-ssh-bench CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// One certificate naming every host's address, signed by `ca`.
fn server_config(
    ca: &CertifiedIssuer<'static, KeyPair>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let key = KeyPair::generate()?;
    let names: Vec<String> = Host::ALL.iter().map(|h| h.ip().to_string()).collect();
    let cert = CertificateParams::new(names)?.signed_by(&key, ca)?;
    let chain = vec![cert.der().clone(), CertificateDer::from(ca.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// What the network's own check measured, at the current RTT.
pub struct Check {
    /// TCP connect through a relay, then one byte echoed: 2 RTT on a real network.
    pub connect_and_echo: Duration,
    /// One more byte echoed on the open connection: 1 RTT.
    pub echo: Duration,
    /// TCP connect and TLS 1.3 handshake to an endpoint: 2 RTT.
    pub tls_handshake: Duration,
    /// Then one HTTP request to its first response byte: 1 RTT more.
    pub https_request: Duration,
}

impl Network {
    /// Times a connect, an echo, a TLS handshake and an HTTPS request through
    /// the relays, to show what each costs in round trips.
    pub async fn check(&self) -> anyhow::Result<Check> {
        let echo = echo_server().await?;
        let relay = Relay::start(Host::Other.ip().into(), echo.addr, self.rtt.clone()).await?;
        let start = Instant::now();
        let mut tcp = TcpStream::connect(relay.addr()).await?;
        tcp.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        tcp.write_all(b"a").await?;
        tcp.read_exact(&mut byte).await?;
        let connect_and_echo = start.elapsed();
        let start = Instant::now();
        tcp.write_all(b"b").await?;
        tcp.read_exact(&mut byte).await?;
        let echo_time = start.elapsed();
        anyhow::ensure!(&byte == b"b", "the relay changed the bytes");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let authority = self.authority(Host::Sts);
        let ip = Host::Sts.ip();
        let start = Instant::now();
        let tcp = TcpStream::connect(&authority).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::IpAddress(IpAddr::V4(ip).into());
        let mut tls = connector.connect(name, tcp).await?;
        let tls_handshake = start.elapsed();
        let start = Instant::now();
        tls.write_all(
            format!("GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        tls.read_exact(&mut byte).await?;
        let https_request = start.elapsed();
        anyhow::ensure!(&byte == b"H", "the endpoint did not answer HTTP");
        Ok(Check {
            connect_and_echo,
            echo: echo_time,
            tls_handshake,
            https_request,
        })
    }
}

/// A loopback server running `handle` on every connection it accepts.
async fn serve_each<F, Fut>(handle: F) -> anyhow::Result<Listening>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(handle(tcp));
        }
    });
    Ok(Listening { addr, task })
}

/// Echoes whatever it reads, per connection.
async fn echo_server() -> anyhow::Result<Listening> {
    serve_each(|mut tcp| async move {
        let (mut r, mut w) = tcp.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes cross the relay intact, in order, both ways, and EOF follows
    /// them. The relay really holds them: a connect plus one echo cannot
    /// take less than two RTTs (a lower bound, which no machine load breaks).
    #[tokio::test]
    async fn relay_delays_and_keeps_every_byte_and_the_eof() {
        let echo = echo_server().await.unwrap();
        let rtt = Rtt::default();
        rtt.set(Duration::from_millis(40));
        let relay = Relay::start(Host::Other.ip().into(), echo.addr, rtt)
            .await
            .unwrap();
        let start = Instant::now();
        let tcp = TcpStream::connect(relay.addr()).await.unwrap();
        let (mut r, mut w) = tcp.into_split();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert!(
            back == data,
            "{} bytes came back of {}",
            back.len(),
            data.len()
        );
        assert!(start.elapsed() >= Duration::from_millis(80));
    }

    /// Clients trusting the run's CA reach the upstream through relay and TLS
    /// front on the host's address, and the check answers for every step.
    #[tokio::test]
    async fn tls_front_is_trusted_for_every_host_address() {
        let upstream = http_stub().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let net = Network::start(upstream.addr, dir.path()).await.unwrap();
        let pem = std::fs::read_to_string(dir.path().join("bench-ca.pem")).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        for host in Host::ALL {
            assert!(net.authority(host).starts_with(&format!("{}:", host.ip())));
        }
        let env = net.env();
        let ssm = env
            .iter()
            .find(|(k, _)| k == "AWS_ENDPOINT_URL_SSM")
            .unwrap();
        assert_eq!(ssm.1, format!("https://{}", net.authority(Host::Ssm)));
        net.check().await.unwrap();
    }

    /// Answers every connection with an HTTP status line.
    async fn http_stub() -> anyhow::Result<Listening> {
        serve_each(|mut tcp| async move {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                .await;
        })
        .await
    }
}
