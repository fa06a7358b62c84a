//! A minimal agent, free of I/O, built on the same reliable channel as the
//! client: it sends the HandshakeRequest, answers the response with
//! HandshakeComplete, records Output and flags, and sends its own Output.

use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};
use sm_ssh_proxy::channel::{Channel, ChannelConfig};
use sm_ssh_proxy::frame::{message_type, payload_type, Frame};
use sm_ssh_proxy::payload::{parse_flag, HandshakeResponse};

pub struct AgentPeer {
    pub channel: Channel,
    pub established: bool,
    pub received: Vec<u8>,
    pub flags: Vec<u32>,
    pub response: Option<HandshakeResponse>,
    /// Output and flags that arrived before HandshakeComplete was sent (must stay empty).
    pub early: usize,
}

impl AgentPeer {
    pub fn new(now: Instant, config: ChannelConfig, properties: Value) -> AgentPeer {
        AgentPeer::with_extra_action(now, config, properties, None)
    }

    /// An agent whose HandshakeRequest also asks for `extra` (e.g. KMSEncryption).
    pub fn with_extra_action(
        now: Instant,
        config: ChannelConfig,
        properties: Value,
        extra: Option<Value>,
    ) -> AgentPeer {
        let mut channel = Channel::new(config, message_type::OUTPUT_STREAM_DATA, now);
        let mut actions = vec![json!({
            "ActionType": "SessionType",
            "ActionParameters": {"SessionType": "Port", "Properties": properties}
        })];
        actions.extend(extra);
        let request = json!({"AgentVersion": "3.3.1802.0", "RequestedClientActions": actions});
        channel.send_message(
            payload_type::HANDSHAKE_REQUEST,
            &serde_json::to_vec(&request).unwrap(),
        );
        AgentPeer {
            channel,
            established: false,
            received: Vec::new(),
            flags: Vec::new(),
            response: None,
            early: 0,
        }
    }

    pub fn ssh(now: Instant, config: ChannelConfig) -> AgentPeer {
        AgentPeer::new(now, config, json!({"portNumber": "22"}))
    }

    pub fn handle(&mut self, now: Instant, bytes: &[u8]) {
        let Ok(frame) = Frame::decode(bytes) else {
            return;
        };
        self.channel.receive(now, frame);
        while let Some(frame) = self.channel.poll_delivered() {
            match frame.payload_type {
                payload_type::HANDSHAKE_RESPONSE => {
                    self.response = Some(serde_json::from_slice(&frame.payload).unwrap());
                    let complete = json!({"HandshakeTimeToComplete": 1000, "CustomerMessage": ""});
                    self.channel.send_message(
                        payload_type::HANDSHAKE_COMPLETE,
                        &serde_json::to_vec(&complete).unwrap(),
                    );
                    self.established = true;
                }
                payload_type::OUTPUT if self.established => {
                    self.received.extend_from_slice(&frame.payload)
                }
                payload_type::FLAG if self.established => {
                    self.flags.push(parse_flag(&frame.payload).unwrap())
                }
                _ => self.early += 1,
            }
        }
    }

    pub fn send_data(&mut self, data: &[u8]) -> usize {
        if self.established {
            self.channel.send_data(data)
        } else {
            0
        }
    }

    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.channel.poll_transmit(now)
    }
}

/// A frame the service itself originates (`channel_closed`, publication control).
pub fn service_frame(kind: &str, payload: &[u8]) -> Bytes {
    Frame::new(
        kind,
        1_700_000_000_000,
        0,
        0,
        payload_type::NONE,
        payload.to_vec(),
    )
    .encode()
}

pub fn channel_closed(output: &str) -> Bytes {
    let body = json!({
        "MessageId": "00000000-0000-4000-8000-000000000000",
        "CreatedDate": "1700000000000",
        "DestinationId": "mi-0123456789abcdef0",
        "SessionId": "alice-0123456789abcdef0",
        "MessageType": "channel_closed",
        "SchemaVersion": 1,
        "Output": output,
    });
    service_frame(
        message_type::CHANNEL_CLOSED,
        &serde_json::to_vec(&body).unwrap(),
    )
}
