//! What the fake data channel demands before a session's bytes flow, against
//! clients written here: a SigV4-signed upgrade (or a presigned StreamUrl),
//! live credentials, a ClientVersion at or above the service's minimum; and
//! that pings before OpenDataChannel are fine. The library's own client
//! (`sm_ssh_proxy::bridge`) is signed across a ResumeSession redial.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use sm_ssh_integration::auth::{sign_headers, Credential, DataChannelPolicy, STATIC_KEY};
use sm_ssh_integration::world::{Faults, Instance, Pacing, Seed};
use sm_ssh_integration::FakeAws;
use sm_ssh_proxy::frame::Frame;
use sm_ssh_proxy::{bridge, ControlError, Options, SessionControl, StreamTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const INSTANCE: &str = "mi-0123456789abcdef0";
const REGION: &str = "eu-west-1";
/// A generous bound on any one wait, so a broken fake fails instead of hanging.
const WAIT: Duration = Duration::from_secs(60);

fn static_key() -> Credential {
    Credential {
        access_key_id: STATIC_KEY.0.into(),
        secret_access_key: STATIC_KEY.1.into(),
        session_token: None,
        expires: None,
    }
}

/// A fake whose instance's port 22 is a TCP echo.
async fn fake() -> FakeAws {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let mut instance = Instance {
        id: INSTANCE.into(),
        ..Instance::default()
    };
    instance.ports.insert(22, addr);
    FakeAws::start(Seed {
        region: REGION.into(),
        instances: vec![instance],
        activation_tier: "advanced".into(),
        pacing: Pacing::Unconstrained,
        ..Seed::default()
    })
    .await
    .unwrap()
}

fn ssm(fake: &FakeAws, credential: &Credential) -> aws_sdk_ssm::Client {
    let credentials = aws_sdk_ssm::config::Credentials::new(
        &credential.access_key_id,
        &credential.secret_access_key,
        credential.session_token.clone(),
        None,
        "test",
    );
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(REGION))
        .credentials_provider(credentials)
        .endpoint_url(fake.endpoint())
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

async fn start_session(fake: &FakeAws) -> StreamTarget {
    let out = ssm(fake, &static_key())
        .start_session()
        .target(INSTANCE)
        .document_name("AWS-StartSSHSession")
        .send()
        .await
        .unwrap();
    StreamTarget {
        session_id: out.session_id().unwrap().into(),
        stream_url: out.stream_url().unwrap().into(),
        token: out.token_value().unwrap().into(),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Upgrades to `url` with `headers`; the HTTP status of a refusal.
async fn dial(url: &str, headers: &[(String, String)]) -> Result<Ws, (u16, String)> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(other) => panic!("dial failed: {other}"),
    }
}

fn signed(url: &str, credential: &Credential) -> Vec<(String, String)> {
    sign_headers(url, &[], credential, REGION, SystemTime::now()).unwrap()
}

fn open_data_channel(token: &str, client_version: &str) -> Message {
    Message::text(
        serde_json::json!({
            "MessageSchemaVersion": "1.0",
            "RequestId": uuid::Uuid::new_v4().to_string(),
            "TokenValue": token,
            "ClientId": uuid::Uuid::new_v4().to_string(),
            "ClientVersion": client_version,
        })
        .to_string(),
    )
}

/// The first data frame's type: `output_stream_data` (the agent's
/// HandshakeRequest) once the session is accepted; the close reason otherwise.
async fn first_frame(ws: &mut Ws) -> Result<String, String> {
    loop {
        match timeout(WAIT, ws.next()).await.expect("an answer") {
            Some(Ok(Message::Binary(bytes))) => {
                return Ok(Frame::decode(&bytes).unwrap().message_type)
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map(|f| f.reason.to_string()).unwrap_or_default())
            }
            Some(Ok(_)) => continue,
            other => return Err(format!("{other:?}")),
        }
    }
}

/// The upgrade is accepted and a current client's OpenDataChannel with
/// `token` gets the agent's handshake.
async fn assert_opens(url: &str, headers: &[(String, String)], token: &str) {
    let mut ws = dial(url, headers).await.unwrap();
    ws.send(open_data_channel(token, "1.2.764.0"))
        .await
        .unwrap();
    assert_eq!(first_frame(&mut ws).await.unwrap(), "output_stream_data");
}

fn refused_upgrades(fake: &FakeAws) -> u64 {
    fake.world()
        .lock()
        .unwrap()
        .data_plane
        .stats()
        .refused_upgrades
}

#[tokio::test]
async fn an_unsigned_upgrade_is_refused_with_403() {
    let fake = fake().await;
    let target = start_session(&fake).await;
    let (status, body) = dial(&target.stream_url, &[]).await.unwrap_err();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("MissingAuthenticationToken"), "{body}");
    assert_eq!(refused_upgrades(&fake), 1);
}

#[tokio::test]
async fn a_wrong_secret_a_stale_date_or_a_foreign_region_is_refused() {
    let fake = fake().await;
    let target = start_session(&fake).await;
    let url = &target.stream_url;
    let wrong = Credential {
        secret_access_key: "not-the-secret".into(),
        ..static_key()
    };
    let (status, body) = dial(url, &signed(url, &wrong)).await.unwrap_err();
    assert_eq!(status, 403);
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");

    let stale = SystemTime::now() - Duration::from_secs(600);
    let headers = sign_headers(url, &[], &static_key(), REGION, stale).unwrap();
    let (status, body) = dial(url, &headers).await.unwrap_err();
    assert_eq!(status, 403);
    assert!(body.contains("Signature expired"), "{body}");

    let headers = sign_headers(url, &[], &static_key(), "us-west-2", SystemTime::now()).unwrap();
    let (status, body) = dial(url, &headers).await.unwrap_err();
    assert_eq!(status, 403);
    assert!(body.contains("scoped to a valid region"), "{body}");

    let unknown = Credential {
        access_key_id: "AKIDNOBODYKNOWS".into(),
        ..static_key()
    };
    let (status, body) = dial(url, &signed(url, &unknown)).await.unwrap_err();
    assert_eq!(status, 403);
    assert!(
        body.contains("security token included in the request is invalid"),
        "{body}"
    );

    let mut tampered = signed(url, &static_key());
    for (name, value) in &mut tampered {
        if name == "authorization" {
            *value = value.replace("Signature=", "Signature=0");
        }
    }
    let (status, _) = dial(url, &tampered).await.unwrap_err();
    assert_eq!(status, 403);
    assert_eq!(refused_upgrades(&fake), 5);

    // The session's token was never used: a good signature still opens it.
    assert_opens(url, &signed(url, &static_key()), &target.token).await;
}

#[tokio::test]
async fn expired_credentials_are_refused_on_the_upgrade_and_the_api() {
    let fake = fake().await;
    let target = start_session(&fake).await;
    let expired = fake.mint_credentials(Duration::ZERO);
    let url = &target.stream_url;
    let (status, body) = dial(url, &signed(url, &expired)).await.unwrap_err();
    assert_eq!(status, 403);
    assert!(body.contains("ExpiredToken"), "{body}");
    assert!(
        body.contains("The security token included in the request is expired"),
        "{body}"
    );

    let error = ssm(&fake, &expired)
        .resume_session()
        .session_id(&target.session_id)
        .send()
        .await
        .unwrap_err();
    use aws_sdk_ssm::error::ProvideErrorMetadata;
    assert_eq!(error.code(), Some("ExpiredTokenException"));
    assert_eq!(
        error.message(),
        Some("The security token included in the request is expired")
    );

    // Live temporary credentials work on both.
    let live = fake.mint_credentials(Duration::from_secs(900));
    ssm(&fake, &live)
        .resume_session()
        .session_id(&target.session_id)
        .send()
        .await
        .unwrap();
    assert_opens(url, &signed(url, &live), &target.token).await;
    // A session token that is not the key's is refused.
    let forged = Credential {
        session_token: Some("forged".into()),
        ..live
    };
    let (status, _) = dial(url, &signed(url, &forged)).await.unwrap_err();
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_client_below_the_minimum_version_is_refused_and_the_minimum_is_configurable() {
    let fake = fake().await;
    let target = start_session(&fake).await;
    let url = &target.stream_url;
    let mut ws = dial(url, &signed(url, &static_key())).await.unwrap();
    ws.send(open_data_channel(&target.token, "1.2.707.0"))
        .await
        .unwrap();
    let reason = first_frame(&mut ws).await.unwrap_err();
    assert!(
        reason.contains("below the minimum supported 1.2.764.0"),
        "{reason}"
    );

    fake.set_data_channel_policy(DataChannelPolicy {
        min_client_version: None,
        ..DataChannelPolicy::default()
    });
    let target = start_session(&fake).await;
    let url = &target.stream_url;
    let mut ws = dial(url, &signed(url, &static_key())).await.unwrap();
    ws.send(open_data_channel(&target.token, "1.2.707.0"))
        .await
        .unwrap();
    assert_eq!(first_frame(&mut ws).await.unwrap(), "output_stream_data");
}

#[tokio::test]
async fn pings_before_open_data_channel_are_skipped() {
    let fake = fake().await;
    let target = start_session(&fake).await;
    let url = &target.stream_url;
    let mut ws = dial(url, &signed(url, &static_key())).await.unwrap();
    ws.send(Message::Ping(b"keepalive".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Pong(b"keepalive".to_vec().into()))
        .await
        .unwrap();
    ws.send(open_data_channel(&target.token, "1.2.764.0"))
        .await
        .unwrap();
    assert_eq!(first_frame(&mut ws).await.unwrap(), "output_stream_data");
}

#[tokio::test]
async fn presigned_stream_urls_open_without_headers_and_only_untouched() {
    let fake = fake().await;
    fake.set_data_channel_policy(DataChannelPolicy {
        presign_urls: true,
        ..DataChannelPolicy::default()
    });
    let target = start_session(&fake).await;
    let url = &target.stream_url;
    assert!(sm_ssh_proxy::is_presigned(url), "{url}");
    // Tampered: another session's path under the same signature.
    let other = url.replace(&target.session_id, "alice-00000000000000000");
    let (status, body) = dial(&other, &[]).await.unwrap_err();
    assert_eq!(status, 403, "{body}");
    // Both a presigned query and an Authorization header: refused.
    let (status, _) = dial(url, &signed(url, &static_key())).await.unwrap_err();
    assert_eq!(status, 400);
    assert_opens(url, &[], &target.token).await;
}

/// ResumeSession through the fake's API, and upgrades signed with `credential`.
struct Control {
    ssm: aws_sdk_ssm::Client,
    credential: Credential,
    signed: std::sync::Mutex<usize>,
}

impl SessionControl for Control {
    async fn resume(&self, session_id: &str) -> Result<StreamTarget, ControlError> {
        let out = self
            .ssm
            .resume_session()
            .session_id(session_id)
            .send()
            .await
            .map_err(|e| ControlError::retryable(e.to_string()))?;
        Ok(StreamTarget {
            session_id: session_id.into(),
            stream_url: out.stream_url().unwrap().into(),
            token: out.token_value().unwrap().into(),
        })
    }

    async fn terminate(&self, session_id: &str) -> Result<(), ControlError> {
        let _ = self
            .ssm
            .terminate_session()
            .session_id(session_id)
            .send()
            .await;
        Ok(())
    }

    async fn upgrade_headers(&self, url: &str) -> Result<Vec<(String, String)>, ControlError> {
        *self.signed.lock().unwrap() += 1;
        Ok(signed(url, &self.credential))
    }
}

/// 128 KiB through `bridge` while the fake cuts the websocket after every 250
/// frames: the redials go through ResumeSession and must be signed again.
async fn echo_across_cuts(fake: &FakeAws) -> Arc<Control> {
    fake.set_faults(Faults {
        cut_after_messages: Some(250),
        ..Faults::default()
    });
    let control = Arc::new(Control {
        ssm: ssm(fake, &static_key()),
        credential: static_key(),
        signed: Default::default(),
    });
    let target = start_session(fake).await;
    let options = Options {
        pacing: None,
        ..Options::default()
    };
    let (app, side) = tokio::io::duplex(64 * 1024);
    let (read, write) = tokio::io::split(side);
    let session = tokio::spawn(bridge(target, control.clone(), options, read, write));
    let (mut app_read, mut app_write) = tokio::io::split(app);
    let data: Vec<u8> = (0..128 * 1024).map(|i| (i % 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        app_write.write_all(&sent).await.unwrap();
        app_write
    });
    let mut echoed = vec![0u8; data.len()];
    let read = timeout(WAIT, app_read.read_exact(&mut echoed)).await;
    if !matches!(read, Ok(Ok(_))) {
        session.abort();
        let stats = fake.world().lock().unwrap().data_plane.stats();
        panic!("no echo ({read:?}): {:?}; {stats:?}", session.await);
    }
    assert!(echoed == data, "echo differs");
    drop(writer.await.unwrap());
    drop(app_read);
    let end = session.await.unwrap().expect("the session ends cleanly");
    assert!(end.stats.reconnects >= 1, "{:?}", end.stats);
    control
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_signs_every_dial_and_redial() {
    let fake = fake().await;
    let control = echo_across_cuts(&fake).await;
    let stats = fake.world().lock().unwrap().data_plane.stats();
    assert!(stats.cuts >= 1 && stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.refused_upgrades, 0, "{stats:?}");
    assert_eq!(*control.signed.lock().unwrap() as u64, stats.reconnects + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_survive_redials_unsigned() {
    let fake = fake().await;
    fake.set_data_channel_policy(DataChannelPolicy {
        presign_urls: true,
        ..DataChannelPolicy::default()
    });
    let control = echo_across_cuts(&fake).await;
    let stats = fake.world().lock().unwrap().data_plane.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.refused_upgrades, 0, "{stats:?}");
    assert_eq!(
        *control.signed.lock().unwrap(),
        0,
        "presigned URLs are not signed again"
    );
}
