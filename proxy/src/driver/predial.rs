//! A data-channel connection dialled before its StreamUrl exists. The URL's
//! origin (scheme, host, port) is known before StartSession answers (from
//! the region, or from the last session), so the TCP connection, a proxy's
//! CONNECT and the TLS handshake can run while StartSession is in flight;
//! only the websocket upgrade, which needs the session id and its
//! signature, waits for the answer.

use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::MaybeTlsStream;

use super::socket;

type Dialled = Result<MaybeTlsStream<TcpStream>, String>;

/// A connection being dialled to one origin; dropping it closes it.
pub struct Predial {
    origin: (String, String, u16),
    task: JoinHandle<Dialled>,
}

impl Drop for Predial {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Predial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predial")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// `(scheme, host, port)` of a `ws://` or `wss://` URL, the port defaulted.
fn origin(url: &Uri) -> Option<(String, String, u16)> {
    let scheme = url.scheme_str()?;
    let default = match scheme {
        "wss" => 443,
        "ws" => 80,
        _ => return None,
    };
    let host = url.host()?.to_ascii_lowercase();
    Some((scheme.to_owned(), host, url.port_u16().unwrap_or(default)))
}

impl Predial {
    /// Starts dialling the origin of `url` (a `ws://` or `wss://` URL; its
    /// path and query are ignored). `None` when it names no such origin.
    /// Must be called within a tokio runtime.
    pub fn start(url: &str) -> Option<Predial> {
        let uri: Uri = url.parse().ok()?;
        let origin = origin(&uri)?;
        let task = tokio::spawn(async move { socket::connect(&uri).await });
        Some(Predial { origin, task })
    }

    /// The connection, when it was dialled to `url`'s origin and the dial
    /// worked; otherwise `None` and the caller dials afresh (which reports
    /// the error, if it happens again).
    pub(crate) async fn take_for(mut self, url: &Uri) -> Option<MaybeTlsStream<TcpStream>> {
        if origin(url).as_ref() != Some(&self.origin) {
            tracing::debug!(predialled = ?self.origin, "the StreamUrl is elsewhere; dialling it");
            return None;
        }
        match (&mut self.task).await {
            Ok(Ok(stream)) => {
                tracing::debug!(origin = ?self.origin, "using the connection dialled during StartSession");
                Some(stream)
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "the early dial failed; dialling again");
                None
            }
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_default_the_port_and_ignore_path_query_and_case() {
        let of = |url: &str| origin(&url.parse().unwrap());
        assert_eq!(
            of("wss://SSMmessages.eu-west-1.amazonaws.com/v1/data-channel/s-1?role=publish_subscribe"),
            Some(("wss".into(), "ssmmessages.eu-west-1.amazonaws.com".into(), 443))
        );
        assert_eq!(
            of("ws://127.0.0.1:9/x"),
            Some(("ws".into(), "127.0.0.1".into(), 9))
        );
        assert_eq!(of("https://example.com/"), None);
    }
}
