//! One websocket to the data channel: dial (through a proxy if the
//! environment names one), sign the upgrade, authenticate, and a writer task
//! so that the engine loop never blocks on a slow socket.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use super::predial::Predial;
use super::{is_presigned, tunnel, SessionControl, SessionError, StreamTarget};
use crate::payload::OpenDataChannel;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Frames buffered between the engine loop and the writer task.
const WRITE_QUEUE: usize = 64;

/// How much tungstenite reads at a time. It zeroes this much before every
/// read, and its default (128 KiB) made that memset 8% of a paced session's
/// CPU for frames of about 1 KiB (docs/benchmarks.md, "Runtime").
const READ_BUFFER: usize = 16 << 10;

/// The ClientId sent in every OpenDataChannel of this process.
fn client_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| Uuid::new_v4().to_string())
}

/// The host part of a URL, for error messages (never the query).
pub(crate) fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

pub(crate) struct Socket {
    pub read: SplitStream<Ws>,
    pub write: mpsc::Sender<Message>,
    writer: JoinHandle<()>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

/// Dials `target.stream_url` with the upgrade signed by `control` (unless
/// the URL is presigned) and sends the OpenDataChannel message.
/// A `predial` to the URL's origin stands in for the TCP and TLS connection.
pub(crate) async fn open<C: SessionControl>(
    target: &StreamTarget,
    control: &C,
    client_version: &str,
    timeout: Duration,
    predial: Option<Predial>,
) -> Result<Socket, SessionError> {
    let dial_error = |reason: String| SessionError::Dial {
        host: host_of(&target.stream_url),
        reason,
    };
    let headers = if is_presigned(&target.stream_url) {
        Vec::new()
    } else {
        match control.upgrade_headers(&target.stream_url).await {
            Ok(headers) => headers,
            Err(error) if !error.retryable => return Err(SessionError::Sign(error.message)),
            Err(error) => return Err(dial_error(error.message)),
        }
    };
    let mut request = target
        .stream_url
        .as_str()
        .into_client_request()
        .map_err(|e| dial_error(describe(&e)))?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| dial_error(format!("bad signing header name {name:?}")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| dial_error(format!("bad value for signing header {name}")))?;
        request.headers_mut().insert(name, value);
    }
    let dial = async {
        let stream = match predial {
            Some(predial) => predial.take_for(request.uri()).await,
            None => None,
        };
        let stream = match stream {
            Some(stream) => stream,
            None => connect(request.uri()).await?,
        };
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| describe(&e))
    };
    let (ws, _) = tokio::time::timeout(timeout, dial)
        .await
        .map_err(|_| dial_error(format!("timed out after {timeout:?}")))?
        .map_err(dial_error)?;
    let (mut sink, read) = ws.split();
    let open = OpenDataChannel {
        message_schema_version: "1.0".to_owned(),
        request_id: Uuid::new_v4().to_string(),
        token_value: target.token.clone(),
        client_id: Some(client_id().to_owned()),
        client_version: Some(client_version.to_owned()),
    };
    let text = serde_json::to_string(&open).expect("OpenDataChannel serialises");
    sink.send(Message::text(text))
        .await
        .map_err(|e| dial_error(e.to_string()))?;
    let (write, rx) = mpsc::channel(WRITE_QUEUE);
    let writer = tokio::spawn(write_loop(sink, rx));
    Ok(Socket {
        read,
        write,
        writer,
    })
}

/// The connection under a websocket to `url`: TCP (through the environment's
/// proxy, if any), then TLS for `wss://`.
pub(crate) async fn connect(url: &Uri) -> Result<MaybeTlsStream<TcpStream>, String> {
    let tcp = tunnel::connect(url).await?;
    if url.scheme_str() != Some("wss") {
        return Ok(MaybeTlsStream::Plain(tcp));
    }
    let host = url.host().unwrap_or_default().trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("bad StreamUrl host {host}: {e}"))?;
    let tls = TlsConnector::from(tls_config()?)
        .connect(name, tcp)
        .await
        .map_err(
            |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => tls_failure(tls),
                None => e.to_string(),
            },
        )?;
    Ok(MaybeTlsStream::Rustls(tls))
}

/// TLS settings for `wss://`: the platform's roots (which honour `SSL_CERT_FILE`
/// and `SSL_CERT_DIR`, so corporate TLS-inspecting CAs work) plus Mozilla's.
/// Loaded per dial (dials are rare) so a changed trust store is picked up. The
/// provider is named explicitly: no process-wide default needs installing.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "some of the platform's trusted certificates could not be loaded");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "platform root certificates");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An upgrade error in one line.
fn describe(error: &WsError) -> String {
    match error {
        // The service's refusal (a bad or stale signature, expired credentials).
        WsError::Http(response) => format!(
            "the service refused the websocket upgrade with HTTP {}{}",
            response.status(),
            response
                .body()
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(|b| format!(": {}", b.trim()))
                .unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

/// A TLS failure in one line, with where trust comes from.
fn tls_failure(tls: &rustls::Error) -> String {
    format!(
        "TLS handshake failed: {tls} (trusted: the system's CA store, or SSL_CERT_FILE/SSL_CERT_DIR if set, and Mozilla's roots)"
    )
}

/// Writes queued messages, flushing once per batch. Ends (dropping the receiver,
/// which the engine loop notices) on the first error.
async fn write_loop(mut sink: SplitSink<Ws, Message>, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(WRITE_QUEUE);
    while rx.recv_many(&mut batch, WRITE_QUEUE).await > 0 {
        for message in batch.drain(..) {
            if let Err(error) = sink.feed(message).await {
                tracing::debug!(%error, "websocket write failed");
                return;
            }
        }
        if let Err(error) = sink.flush().await {
            tracing::debug!(%error, "websocket flush failed");
            return;
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_scheme_path_and_query() {
        assert_eq!(
            host_of("wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/s-1?role=publish_subscribe"),
            "ssmmessages.eu-west-1.amazonaws.com"
        );
        assert_eq!(host_of("ws://127.0.0.1:9/x"), "127.0.0.1:9");
    }
}
