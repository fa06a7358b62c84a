//! Frames encoded and decoded per second (1024-byte Output payloads, the size
//! every producer uses, and 175-byte acknowledgements).
//! Run: `cargo bench -p sm-ssh-proxy --bench codec`

use std::hint::black_box;
use std::time::{Duration, Instant};

use sm_ssh_proxy::frame::{message_type, payload_type, Frame};

/// Runs `f` repeatedly for about `budget` and returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            f();
        }
        calls += 1000;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let budget = Duration::from_secs(2);
    let data = Frame::new(
        message_type::INPUT_STREAM_DATA,
        1_700_000_000_000,
        42,
        0,
        payload_type::OUTPUT,
        vec![0x5a; 1024],
    );
    let ack = Frame::new(
        message_type::ACKNOWLEDGE,
        1_700_000_000_000,
        0,
        3,
        payload_type::NONE,
        br#"{"AcknowledgedMessageType":"input_stream_data","AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16","AcknowledgedMessageSequenceNumber":42,"IsSequentialMessage":true}"#.to_vec(),
    );
    for (name, frame) in [
        ("data frame (1024 B payload)", &data),
        ("acknowledge frame", &ack),
    ] {
        let encoded = frame.encode();
        let encode = rate(budget, || {
            black_box(black_box(frame).encode());
        });
        let decode = rate(budget, || {
            black_box(Frame::decode(black_box(&encoded)).unwrap());
        });
        println!("{name}: encode {encode:.0}/s, decode {decode:.0}/s");
    }
}
