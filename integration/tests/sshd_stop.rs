//! `EmbeddedSshServer::stop` releases its port. In a test binary of its own:
//! with other tests running in the same process, their sockets and child
//! processes can occupy the freed port and make the check meaningless.

use sm_ssh_integration::sshd::{EmbeddedSshServer, SshdConfig};

#[tokio::test]
async fn a_stopped_server_no_longer_listens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SshdConfig::new(vec![dir.path().join("authorized_keys")], dir.path());
    let server = EmbeddedSshServer::start(config).await.expect("start sshd");
    let addr = server.addr();
    assert!(
        std::net::TcpListener::bind(addr).is_err(),
        "the server holds {addr} while it runs"
    );
    server.stop().await;
    let bound = std::net::TcpListener::bind(addr);
    assert!(
        bound.is_ok(),
        "{addr} is still held after stop(): {bound:?}"
    );
}
