#!/usr/bin/env python3
"""Writes the small seed corpus in fuzz/corpus/<target>/ (run from fuzz/).

Each seed is a well-formed input that reaches deep into its target, so the
fuzzer (and tests/fuzz_replay.rs's mutations) start from real protocol
traffic rather than from nothing.
"""
import hashlib, json, os, struct, uuid

def frame(mtype, seq, ptype, payload, hl=116, flags=0):
    mid = uuid.UUID(int=seq & (2**128 - 1) | 1 << 100).bytes
    head = struct.pack(">I", hl) + mtype.encode().ljust(32, b" ")
    head += struct.pack(">IQqQ", 1, 1700000000000, seq, flags) + mid[8:] + mid[:8]
    head += hashlib.sha256(payload).digest()
    if hl == 116:
        head += struct.pack(">I", ptype)
    return head + struct.pack(">I", len(payload)) + payload

PORT = {"AgentVersion": "3.3.0.0", "RequestedClientActions": [{"ActionType": "SessionType",
        "ActionParameters": {"SessionType": "Port", "Properties": {"type": "LocalPortForwarding"}}}]}
ACK = {"AcknowledgedMessageType": "input_stream_data", "AcknowledgedMessageId": str(uuid.UUID(int=5)),
       "AcknowledgedMessageSequenceNumber": 0, "IsSequentialMessage": True}

def write(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/{name}", "wb") as f:
        f.write(data)

write("frame", "output", frame("output_stream_data", 3, 1, b"SSH-2.0-OpenSSH_9.6\r\n"))
write("frame", "ack", frame("acknowledge", 0, 0, json.dumps(ACK).encode(), flags=3))
write("frame", "handshake", frame("output_stream_data", 0, 5, json.dumps(PORT).encode()))
write("frame", "closed_short_header", frame("channel_closed", 0, 0, b'{"Output":"bye"}', hl=112))
write("frame", "pause", frame("pause_publication", 0, 0, b""))

header = bytes([0, 63, 63, 0x75, 0x30])
ssh = header + bytes([1, 0, 4, 0,  1, 1, 5,  7, 0x04, 0x00,  1, 2, 0, 16,  3, 0, 0,  5, 0, 200,
                      1, 4, 0, 5,  1, 3, 0, 5,  8,  5, 1, 0,  7, 0x10, 0x00,  3, 0, 1,  9, 2])
write("engine", "ssh_session", ssh)
mux = bytes([1, 8, 4, 0x00, 0x10]) + bytes([1, 0, 4, 1,  1, 1, 5,  4, 0,  7, 0, 100,  5, 0, 250,
                                            4, 1,  1, 2, 6, 3,  1, 3, 1, 9,  4, 2,  7, 0, 10])
write("engine", "mux_pause_close", mux)
raw = frame("output_stream_data", 2, 1, b"raw output")
write("engine", "raw_frames", header + bytes([0, len(raw)]) + raw + bytes([1, 0, 4, 0, 1, 1, 5, 5, 0xff, 0xff, 7, 0, 9, 0, 3]))
write("engine", "handshake_timeout", bytes([0, 1, 1, 0, 5,  5, 0, 10,  7, 0, 10,  1, 0, 4, 3]))

def smux(cmd, sid, body=b""):
    return bytes([1, cmd]) + struct.pack("<HI", len(body), sid) + body

write("smux", "streams", bytes([3, 5]) + smux(2, 3, b"hello") + smux(3, 0) + smux(2, 5, b"x" * 40)
      + smux(1, 8) + smux(1, 3) + smux(2, 7, b"late"))
write("smux", "bad_version", bytes([1, 1]) + smux(2, 3, b"a") + b"\x02\x02\x00\x00")

write("payloads", "handshake_request", json.dumps(PORT).encode())
write("payloads", "kms_request", json.dumps({"AgentVersion": "3.1.0.0", "RequestedClientActions": [
    {"ActionType": "KMSEncryption", "ActionParameters": {"KMSKeyId": "arn:aws:kms:k"}},
    {"ActionType": "SessionType", "ActionParameters": {"SessionType": "Standard_Stream"}}]}).encode())
write("payloads", "acknowledge", json.dumps(ACK).encode())
write("payloads", "open_data_channel", json.dumps({"MessageSchemaVersion": "1.0", "RequestId": "r",
      "TokenValue": "t", "ClientId": "c", "ClientVersion": "1.2.707.0"}).encode())
write("payloads", "versions", b"1.2.707.0 1.1.70")

response = '{"SessionId":"s","TokenValue":"t","StreamUrl":"wss://h/v1/data-channel/s"}'
request = '{"Target":"mi-0123","DocumentName":"AWS-StartPortForwardingSession","Parameters":{"portNumber":["80"]}}'
write("plugin_args", "inline", "\0".join(["{}", "eu-west-1", "StartSession", "", request, "https://ssm"]).encode())
write("plugin_args", "variable", "\0".join(["AWS_SSM_START_SESSION_RESPONSE_1", "us-east-1", "StartSession", "prof"]).encode())
write("plugin_args", "full_response", "\0".join([response, "us-east-1", "StartSession"]).encode())
write("plugin_args", "version", b"--version")

for name, text in [("training", "my-job.training.sagemaker"), ("studio_long", "default.my-space.d-abc123.studio.sagemaker"),
                   ("instance", "mi-0123456789abcdef0"), ("native", "sagemaker-cluster:c_group-i-0123"),
                   ("fqdn", "ep-1.inference.sagemaker.")]:
    write("target", name, text.encode())
