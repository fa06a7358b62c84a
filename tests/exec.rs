//! `sm-ssh exec` against the fake agent's NonInteractiveCommands plugin:
//! stdout and stderr apart, the remote exit status, 5 MB byte for byte (also
//! with the websocket cut every 2 s), a command that does not exist, and the
//! same with KMS encryption (a denied GenerateDataKey, a wrong key, no
//! secret in the logs at -vv).

mod common;

use common::{assert_exit, seed_with, training_instance, Env};
use sm_ssh_integration::world::{Faults, Pacing, Seed, SessionPreferences};

const INSTANCE: &str = "mi-0e1f2a3b4c5d6e7f8";
const KEY: &str = "alias/session-manager";

fn env(kms: bool) -> Env {
    let mut seed: Seed = seed_with(vec![training_instance(INSTANCE, "my-job", 1_700_000_000)]);
    if kms {
        seed.kms_keys = vec![KEY.to_owned()];
        seed.session_preferences = SessionPreferences {
            kms_key_id: KEY.to_owned(),
            ..SessionPreferences::default()
        };
    }
    Env::start(seed)
}

fn exec(env: &Env, command: &[&str]) -> std::process::Output {
    let mut args = vec!["exec", INSTANCE, "--"];
    args.extend(command);
    env.run(args)
}

const SEPARATE: &[&str] = &["sh", "-c", "echo out; echo err >&2; exit 7"];

#[test]
fn stdout_stderr_and_the_exit_status_come_back_apart() {
    let env = env(false);
    let (stdout, stderr) = assert_exit(&exec(&env, SEPARATE), 7);
    assert_eq!(stdout, "out\n");
    assert_eq!(stderr, "err\n");
    let started = env
        .fake
        .events()
        .into_iter()
        .find(|e| e.action == "ssm:StartSession")
        .unwrap();
    assert_eq!(
        started.document.as_deref(),
        Some("AWS-StartNonInteractiveCommand")
    );
}

/// 5 MB of text through `head -c` of a seeded file, compared byte for byte.
fn five_megabytes(env: &Env) {
    let sandbox = env.fake.sandbox(INSTANCE).unwrap();
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789\n"[(i % 37) as usize])
        .collect();
    std::fs::write(sandbox.join("home/big.txt"), &data).unwrap();
    let output = exec(env, &["cat", "big.txt"]);
    let (_, stderr) = common::text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        output.stdout == data,
        "5 MB differ ({} bytes came)",
        output.stdout.len()
    );
}

/// Under load the relay's queue towards a slow client grows; MGS keeps what
/// a cut websocket had not written for the next one (docs/fake-aws.md), so
/// nothing depends on the agent's head-only resend, which could not replay a
/// lost second of output before its closing drain.
#[test]
fn five_megabytes_arrive_byte_for_byte_even_when_the_websocket_is_cut_every_2_s() {
    let env = env(false);
    // The agent's pump (about 1000 messages/s, so the 5 MB take 5 s and see
    // two cuts) under a ceiling it does not reach.
    env.fake.set_pacing(Pacing::Ceiling {
        messages_per_second: 4000,
    });
    env.fake.set_faults(Faults {
        cut_every_ms: Some(2000),
        ..Faults::default()
    });
    let resumes = || {
        env.fake
            .events()
            .iter()
            .filter(|e| e.action == "ssm:ResumeSession")
            .count()
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // A cut inside the agent's last 2 s (its drain before closing,
        // `datachannel.go` `PrepareToCloseChannel`) loses output on the real
        // service too: after two cuts mid-transfer, later connections are not cut.
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if resumes() >= 2 {
                    env.fake.set_faults(Faults::default());
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        five_megabytes(&env);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(resumes() >= 1, "the websocket was cut and resumed");
}

#[test]
fn a_missing_command_fails_clearly() {
    let env = env(false);
    let (_, stderr) = assert_exit(&exec(&env, &["no-such-command-xyz"]), 1);
    assert!(stderr.contains("no-such-command-xyz"), "{stderr}");
}

#[test]
fn kms_sessions_encrypt_and_keep_secrets_out_of_the_logs() {
    let env = env(true);
    let output = env.run([
        "-vv",
        "exec",
        INSTANCE,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    let (stdout, stderr) = assert_exit(&output, 7);
    assert_eq!(stdout, "out\n");
    assert!(stderr.contains("err\n"), "{stderr}");
    assert!(stderr.contains("encrypted using AWS KMS"), "{stderr}");
    let generated: Vec<_> = env
        .fake
        .events()
        .into_iter()
        .filter(|e| e.action == "kms:GenerateDataKey")
        .collect();
    assert_eq!(generated.len(), 1);
    // Nothing at -vv shows the data key (plaintext or ciphertext) or a payload.
    for secret in [
        "Plaintext",
        "CiphertextBlob",
        "KMSCipherTextKey",
        "EXIT_CODE",
    ] {
        assert!(!stderr.contains(secret), "{secret} in the logs:\n{stderr}");
    }
    five_megabytes(&env);
}

#[test]
fn a_denied_generate_data_key_names_the_action_the_key_and_the_fix() {
    let env = env(true);
    env.fake.deny_action("kms:GenerateDataKey", true);
    let (_, stderr) = assert_exit(&exec(&env, SEPARATE), 6);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("kms:GenerateDataKey"), "{stderr}");
    assert!(stderr.contains(KEY), "{stderr}");
    assert!(stderr.contains("sm-ssh policy"), "{stderr}");
}

#[test]
fn a_denied_decrypt_on_the_instance_names_the_fix() {
    let env = env(true);
    env.fake.deny_action("kms:Decrypt", true);
    let (_, stderr) = assert_exit(&exec(&env, SEPARATE), 6);
    assert!(stderr.contains("kms:Decrypt"), "{stderr}");
    assert!(stderr.contains("instance"), "{stderr}");
}

#[test]
fn a_wrong_key_fails_with_a_clear_error() {
    let env = env(true);
    env.fake.set_faults(Faults {
        kms_wrong_key: true,
        ..Faults::default()
    });
    let (_, stderr) = assert_exit(&exec(&env, SEPARATE), 1);
    assert!(stderr.contains("does not decrypt"), "{stderr}");
    assert!(stderr.contains("KMS"), "{stderr}");
}
