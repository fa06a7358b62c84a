//! `wss://` end to end: the loopback agent behind TLS with a certificate from a
//! CA made at test time. Trust comes from `SSL_CERT_FILE` (as with a corporate
//! TLS-inspecting proxy), which is process-global: this file is its own test
//! binary and holds a single test that sets it in turn. The early dial
//! (`Predial`) is tested here too, since it needs the same trust.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sm_ssh_proxy::{bridge, bridge_open, Options, Predial, SessionError};
use support::ws_agent::{Behaviour, FakeAgent, FakeControl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Server settings with a certificate for `localhost` and 127.0.0.1 signed by `ca`.
fn server_config(ca: &CertifiedIssuer<'static, KeyPair>) -> Arc<rustls::ServerConfig> {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let chain = vec![cert.der().clone(), CertificateDer::from(ca.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

fn options() -> Options {
    Options {
        pacing: None,
        reconnect_initial_delay: Duration::from_millis(10),
        reconnect_max_delay: Duration::from_millis(100),
        ..Options::default()
    }
}

/// Trusts only the CA certificates in `pem` (plus the built-in Mozilla roots).
fn trust(dir: &tempfile::TempDir, name: &str, pem: &str) {
    let path = dir.path().join(name);
    std::fs::write(&path, pem).unwrap();
    std::env::remove_var("SSL_CERT_DIR");
    std::env::set_var("SSL_CERT_FILE", &path);
}

#[tokio::test]
async fn wss_works_when_the_ca_is_trusted_and_fails_clearly_when_not() {
    let ca = new_ca("sm-ssh test CA");
    let fake = FakeAgent::start_tls(Behaviour::default(), server_config(&ca)).await;
    assert!(fake.url_base.starts_with("wss://localhost:"));
    let dir = tempfile::tempdir().unwrap();

    // Another CA is trusted: the handshake fails, and the error says so in one line.
    trust(&dir, "other.pem", &new_ca("some other CA").pem());
    let target = fake.start_session();
    let token = target.token.clone();
    let (_stdin_w, stdin_r) = tokio::io::duplex(1024);
    let (stdout_w, _stdout_r) = tokio::io::duplex(1024);
    let control = FakeControl::new(&fake);
    let error = bridge(target, control, options(), stdin_r, stdout_w)
        .await
        .unwrap_err();
    assert!(matches!(error, SessionError::Dial { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("TLS handshake failed"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("SSL_CERT_FILE"), "{message}");
    assert!(message.contains("localhost:"), "{message}");
    assert!(!message.contains(&token), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(fake.record.lock().unwrap().connections, 0);

    // Our CA is trusted: bytes go through and come back.
    trust(&dir, "ca.pem", &ca.pem());
    let target = fake.start_session();
    let control = FakeControl::new(&fake);
    let (mut stdin_w, stdin_r) = tokio::io::duplex(64 * 1024);
    let (stdout_w, mut stdout_r) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(bridge(target, control, options(), stdin_r, stdout_w));
    let data: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
    let writer = tokio::spawn({
        let data = data.clone();
        async move {
            stdin_w.write_all(&data).await.unwrap();
            stdin_w
        }
    });
    let mut echoed = vec![0u8; data.len()];
    stdout_r.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, data);
    drop(writer.await.unwrap()); // EOF on stdin ends the session
    let end = session.await.unwrap().unwrap();
    assert_eq!(end.stats.reconnects, 0);
    assert_eq!(fake.record.lock().unwrap().connections, 1);

    // Dialled early to the StreamUrl's origin: that connection carries the
    // session, and no other is made.
    let accepted = fake.record.lock().unwrap().accepted;
    let predial = Predial::start(&fake.url_base).unwrap();
    echo_once(&fake, Some(predial)).await;
    assert_eq!(fake.record.lock().unwrap().connections, 2);
    assert_eq!(fake.record.lock().unwrap().accepted, accepted + 1);

    // Dialled early elsewhere (another name for the same server): unused,
    // the session dials its own StreamUrl.
    let port = fake
        .url_base
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let predial = Predial::start(&format!("wss://127.0.0.1:{port}")).unwrap();
    echo_once(&fake, Some(predial)).await;
    assert_eq!(fake.record.lock().unwrap().connections, 3);
}

/// One session opened (through `predial`, if given) that echoes a few bytes.
async fn echo_once(fake: &Arc<FakeAgent>, predial: Option<Predial>) {
    let target = fake.start_session();
    let session = sm_ssh_proxy::open(target, FakeControl::new(fake), options(), predial)
        .await
        .unwrap();
    let (mut stdin_w, stdin_r) = tokio::io::duplex(1024);
    let (stdout_w, mut stdout_r) = tokio::io::duplex(1024);
    let bridged = tokio::spawn(bridge_open(session, stdin_r, stdout_w));
    stdin_w.write_all(b"early").await.unwrap();
    let mut echoed = [0u8; 5];
    stdout_r.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"early");
    drop(stdin_w);
    bridged.await.unwrap().unwrap();
}
