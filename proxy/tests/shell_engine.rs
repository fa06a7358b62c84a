//! The engine in shell and command sessions: no handshake unless the agent
//! asks, Size, StdErr and ExitCode, and KMS encryption (the data key, the
//! challenge exchange, every encrypted payload type, a wrong key).

use std::time::Instant;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};
use sm_ssh_proxy::crypto::{DataKey, KeyError};
use sm_ssh_proxy::frame::{message_type, payload_type, Frame};
use sm_ssh_proxy::{Connection, EngineConfig, EngineError, Event, SessionMode};

fn client(now: Instant) -> Connection {
    let mut config = EngineConfig::default();
    config.channel.pacing = None;
    Connection::new(config, now)
}

fn agent_frame(seq: i64, pt: u32, payload: &[u8]) -> Vec<u8> {
    Frame::new(
        message_type::OUTPUT_STREAM_DATA,
        1_700_000_000_000,
        seq,
        0,
        pt,
        payload.to_vec(),
    )
    .encode()
    .to_vec()
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// The stream messages the client sent (acks left out).
fn sent(c: &mut Connection, now: Instant) -> Vec<Frame> {
    std::iter::from_fn(|| c.poll_transmit(now))
        .map(|b| Frame::decode(&b).unwrap())
        .filter(|f| f.message_type == message_type::INPUT_STREAM_DATA)
        .collect()
}

fn data_key() -> DataKey {
    DataKey {
        ciphertext: b"blob".to_vec(),
        plaintext: (100..164).collect(),
    }
}

/// The agent's ciphers (`blockcipher.go`): it seals with the first half and
/// opens with the second.
fn agent_seal(plain: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(&data_key().plaintext[..32]).unwrap();
    let nonce = [9u8; 12];
    let mut wire = nonce.to_vec();
    wire.extend(cipher.encrypt(&Nonce::from(nonce), plain).unwrap());
    wire
}

fn agent_open(wire: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(&data_key().plaintext[32..]).unwrap();
    let nonce: [u8; 12] = wire[..12].try_into().unwrap();
    cipher.decrypt(&Nonce::from(nonce), &wire[12..]).unwrap()
}

fn shell_request(kms: bool) -> Vec<u8> {
    let mut actions = vec![
        json!({"ActionType":"SessionType","ActionParameters":{"SessionType":"Standard_Stream","Properties":{"linux":{"commands":""}}}}),
    ];
    if kms {
        actions.push(json!({"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"alias/ssm","Challenge":"AAAAAAAAAAAAAAAAAAAAAA=="}}));
    }
    serde_json::to_vec(&json!({"AgentVersion":"3.3.1802.0","RequestedClientActions":actions}))
        .unwrap()
}

#[test]
fn a_shell_without_handshake_starts_with_its_first_output() {
    let now = Instant::now();
    let mut c = client(now);
    assert_eq!(c.send_data(b"early"), 0);
    c.handle_frame(now, &agent_frame(0, payload_type::OUTPUT, b"$ "));
    assert_eq!(c.mode(), Some(SessionMode::Shell));
    assert!(matches!(
        &events(&mut c)[..],
        [Event::HandshakeComplete { mode: SessionMode::Shell, .. }, Event::Data(d)] if &d[..] == b"$ "
    ));
    c.send_size(sm_ssh_proxy::payload::Size {
        cols: 132,
        rows: 43,
    });
    assert_eq!(c.send_data(b"ls\r"), 3);
    let frames = sent(&mut c, now);
    assert_eq!(frames[0].payload_type, payload_type::SIZE);
    assert_eq!(
        serde_json::from_slice::<Value>(&frames[0].payload).unwrap(),
        json!({"cols":132,"rows":43})
    );
    assert_eq!(frames[1].payload_type, payload_type::OUTPUT);
    assert_eq!(&frames[1].payload[..], b"ls\r");
}

#[test]
fn a_command_session_reports_stderr_and_its_exit_code() {
    let now = Instant::now();
    let mut c = client(now);
    let request = serde_json::to_vec(&json!({"AgentVersion":"3.3.1802.0","RequestedClientActions":[
        {"ActionType":"SessionType","ActionParameters":{"SessionType":"NonInteractiveCommands","Properties":{}}}]}))
    .unwrap();
    c.handle_frame(
        now,
        &agent_frame(0, payload_type::HANDSHAKE_REQUEST, &request),
    );
    c.handle_frame(
        now,
        &agent_frame(
            1,
            payload_type::HANDSHAKE_COMPLETE,
            br#"{"HandshakeTimeToComplete":1,"CustomerMessage":""}"#,
        ),
    );
    c.handle_frame(now, &agent_frame(2, payload_type::OUTPUT, b"out\n"));
    c.handle_frame(now, &agent_frame(3, payload_type::STDERR, b"err\n"));
    c.handle_frame(
        now,
        &agent_frame(4, payload_type::EXIT_CODE, b"EXIT_CODE: 7"),
    );
    let got = events(&mut c);
    assert!(matches!(
        &got[0],
        Event::HandshakeComplete {
            mode: SessionMode::Shell,
            ..
        }
    ));
    assert_eq!(got[1], Event::Data(b"out\n"[..].into()));
    assert_eq!(got[2], Event::StdErr(b"err\n"[..].into()));
    assert_eq!(got[3], Event::ExitCode(7));
}

#[test]
fn kms_sessions_exchange_the_challenge_and_encrypt_every_payload() {
    let now = Instant::now();
    let mut c = client(now);
    c.handle_frame(
        now,
        &agent_frame(0, payload_type::HANDSHAKE_REQUEST, &shell_request(true)),
    );
    assert_eq!(
        events(&mut c),
        [Event::DataKeyNeeded {
            key_id: "alias/ssm".into()
        }]
    );
    assert!(sent(&mut c, now).is_empty(), "no response before the key");
    c.provide_data_key(Ok(data_key()));
    let response = sent(&mut c, now);
    let body: Value = serde_json::from_slice(&response[0].payload).unwrap();
    assert_eq!(
        body["ProcessedClientActions"][1]["ActionResult"]["KMSCipherTextKey"],
        BASE64.encode(b"blob")
    );
    assert_eq!(body["ProcessedClientActions"][1]["ActionStatus"], 1);

    let secret = [42u8; 64];
    let challenge = json!({"Challenge": BASE64.encode(agent_seal(&secret))});
    c.handle_frame(
        now,
        &agent_frame(
            1,
            payload_type::ENC_CHALLENGE_REQUEST,
            challenge.to_string().as_bytes(),
        ),
    );
    let answer = sent(&mut c, now);
    assert_eq!(answer[0].payload_type, payload_type::ENC_CHALLENGE_RESPONSE);
    let body: Value = serde_json::from_slice(&answer[0].payload).unwrap();
    let sealed = BASE64.decode(body["Challenge"].as_str().unwrap()).unwrap();
    assert_eq!(agent_open(&sealed), secret);

    let complete = br#"{"HandshakeTimeToComplete":1,"CustomerMessage":"This session is encrypted using AWS KMS."}"#;
    c.handle_frame(
        now,
        &agent_frame(2, payload_type::HANDSHAKE_COMPLETE, complete),
    );
    c.handle_frame(
        now,
        &agent_frame(3, payload_type::OUTPUT, &agent_seal(b"$ ")),
    );
    c.handle_frame(
        now,
        &agent_frame(4, payload_type::STDERR, &agent_seal(b"oops")),
    );
    c.handle_frame(
        now,
        &agent_frame(5, payload_type::EXIT_CODE, &agent_seal(b"EXIT_CODE: 3")),
    );
    let got = events(&mut c);
    assert!(
        matches!(&got[0], Event::HandshakeComplete { customer_message, .. } if customer_message.contains("KMS"))
    );
    assert_eq!(
        got[1..],
        [
            Event::Data(b"$ "[..].into()),
            Event::StdErr(b"oops"[..].into()),
            Event::ExitCode(3)
        ]
    );
    assert!(c.is_encrypted());

    c.send_size(sm_ssh_proxy::payload::Size { cols: 80, rows: 24 });
    let typed = vec![b'x'; 1500];
    assert_eq!(c.send_data(&typed), 1500);
    let frames = sent(&mut c, now);
    assert_eq!(
        frames[0].payload_type,
        payload_type::SIZE,
        "Size stays plain"
    );
    assert_eq!(&frames[0].payload[..], br#"{"cols":80,"rows":24}"#);
    let plain: Vec<u8> = frames[1..]
        .iter()
        .flat_map(|f| agent_open(&f.payload))
        .collect();
    assert_eq!(plain, typed);
    assert_eq!(frames.len(), 3, "at most 1024 plaintext bytes per message");
}

#[test]
fn a_denied_data_key_fails_the_handshake_with_status_failed() {
    let now = Instant::now();
    let mut c = client(now);
    c.handle_frame(
        now,
        &agent_frame(0, payload_type::HANDSHAKE_REQUEST, &shell_request(true)),
    );
    events(&mut c);
    c.provide_data_key(Err(KeyError::Failed(
        "kms:GenerateDataKey denied on alias/ssm".into(),
    )));
    let body: Value = serde_json::from_slice(&sent(&mut c, now)[0].payload).unwrap();
    assert_eq!(body["ProcessedClientActions"][1]["ActionStatus"], 2);
    assert_eq!(
        events(&mut c),
        [Event::Failed(EngineError::Kms(
            "kms:GenerateDataKey denied on alias/ssm".into()
        ))]
    );
}

#[test]
fn a_challenge_under_another_key_is_a_clear_failure() {
    let now = Instant::now();
    let mut c = client(now);
    c.handle_frame(
        now,
        &agent_frame(0, payload_type::HANDSHAKE_REQUEST, &shell_request(true)),
    );
    events(&mut c);
    c.provide_data_key(Ok(DataKey {
        ciphertext: b"blob".to_vec(),
        plaintext: vec![1; 64],
    }));
    let challenge = json!({"Challenge": BASE64.encode(agent_seal(&[5; 64]))});
    c.handle_frame(
        now,
        &agent_frame(
            1,
            payload_type::ENC_CHALLENGE_REQUEST,
            challenge.to_string().as_bytes(),
        ),
    );
    match &events(&mut c)[..] {
        [Event::Failed(EngineError::Decrypt(why))] => assert!(why.contains("challenge"), "{why}"),
        other => panic!("{other:?}"),
    }
}
