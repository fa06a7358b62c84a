//! The TCP connection under a data-channel websocket: straight to the host, or
//! through an HTTP proxy's `CONNECT` tunnel when the environment says so.
//!
//! The rules are the AWS SDK's own (hyper-util's `Matcher::from_env`), so the
//! API calls and the websocket agree: `HTTPS_PROXY` for `wss://`, `HTTP_PROXY`
//! for `ws://`, `ALL_PROXY` for both, `NO_PROXY` to bypass, each also in
//! lowercase. Unlike Go's (the official plugin's), loopback is not bypassed
//! unless `NO_PROXY` names it. Read at every dial, so a changed environment
//! applies to the next reconnect.

use http::Uri;
use hyper_util::client::proxy::matcher::Matcher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy's answer to CONNECT is a status line and headers: this is plenty.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// Opens a TCP stream to `url`'s host and port (wss: 443, ws: 80 by default),
/// tunnelled through the proxy the environment names for it, if any.
pub(crate) async fn connect(url: &Uri) -> Result<TcpStream, String> {
    let secure = url.scheme_str() == Some("wss");
    let host = url.host().ok_or("the StreamUrl has no host")?;
    let port = url.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let authority = format!("{host}:{port}");
    // The matcher keys on the HTTP scheme the websocket scheme stands for.
    let probe: Uri = format!("{}://{authority}/", if secure { "https" } else { "http" })
        .parse()
        .map_err(|e| format!("bad StreamUrl host: {e}"))?;
    let stream = match Matcher::from_env().intercept(&probe) {
        None => TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| e.to_string())?,
        Some(proxy) => through_proxy(&proxy, &authority).await?,
    };
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// `CONNECT authority` through `proxy`; the stream once the proxy says 200.
async fn through_proxy(
    proxy: &hyper_util::client::proxy::matcher::Intercept,
    authority: &str,
) -> Result<TcpStream, String> {
    let uri = proxy.uri();
    let name = uri.host().unwrap_or_default().to_owned();
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "the proxy {name} is not an http:// proxy (only HTTP CONNECT proxies are supported)"
        ));
    }
    let port = uri.port_u16().unwrap_or(80);
    tracing::debug!(proxy = %name, port, target = authority, "dialling through the proxy");
    let mut stream = TcpStream::connect((name.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot reach the proxy {name}:{port}: {e}"))?;
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = proxy.basic_auth().and_then(|v| v.to_str().ok()) {
        request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("the proxy {name}:{port} closed the connection: {e}"))?;
    let head = read_head(&mut stream)
        .await
        .map_err(|e| format!("no answer from the proxy {name}:{port} to CONNECT: {e}"))?;
    let status = head.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(stream),
        _ => Err(format!(
            "the proxy {name}:{port} refused CONNECT {authority}: {status}"
        )),
    }
}

/// Reads the response head byte by byte, so nothing of the tunnelled stream
/// that may follow it is consumed.
async fn read_head(stream: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_RESPONSE {
            return Err("the answer is too long".into());
        }
        let byte = stream.read_u8().await.map_err(|e| e.to_string())?;
        head.push(byte);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-shot proxy that answers CONNECT with `status` and then echoes.
    async fn proxy(status: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let head = read_head(&mut socket).await.unwrap();
            socket.write_all(status.as_bytes()).await.unwrap();
            let mut buf = [0u8; 5];
            if socket.read_exact(&mut buf).await.is_ok() {
                socket.write_all(&buf).await.unwrap();
            }
            head
        });
        (port, task)
    }

    fn intercept(port: u16) -> hyper_util::client::proxy::matcher::Intercept {
        let matcher = Matcher::builder()
            .all(format!("http://user:pw@127.0.0.1:{port}"))
            .build();
        matcher
            .intercept(&"https://ssmmessages.example:443/".parse().unwrap())
            .unwrap()
    }

    #[tokio::test]
    async fn connect_tunnels_with_the_proxy_credentials() {
        let (port, task) = proxy("HTTP/1.1 200 Connection established\r\n\r\n").await;
        let mut stream = through_proxy(&intercept(port), "ssmmessages.example:443")
            .await
            .unwrap();
        stream.write_all(b"hello").await.unwrap();
        let mut echoed = [0u8; 5];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"hello");
        let head = task.await.unwrap();
        assert!(head.starts_with("CONNECT ssmmessages.example:443 HTTP/1.1\r\n"));
        assert!(head.contains("Proxy-Authorization: Basic dXNlcjpwdw==\r\n"));
    }

    #[tokio::test]
    async fn a_refused_connect_is_one_line_naming_the_proxy() {
        let (port, _task) = proxy("HTTP/1.1 403 Forbidden\r\n\r\n").await;
        let error = through_proxy(&intercept(port), "ssmmessages.example:443")
            .await
            .unwrap_err();
        assert_eq!(
            error,
            format!("the proxy 127.0.0.1:{port} refused CONNECT ssmmessages.example:443: HTTP/1.1 403 Forbidden")
        );
        assert!(!error.contains("pw"));
    }
}
