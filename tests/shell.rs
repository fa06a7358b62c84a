//! `sm-ssh shell` in a real terminal (tmux: send-keys, capture-pane) against
//! the fake agent's pty shell: the prompt (from the ShellProfile), a command,
//! a resize seen by `stty size`, Ctrl-C interrupting `sleep 100` without
//! ending the session, `exit 3` ending it, the local terminal restored; the
//! same encrypted with KMS, and with the websocket cut every 2 s. The AWS CLI
//! (`SM_SSH_TEST_AWS_CLI`) with sm-ssh as its plugin, for a shell and an
//! interactive command, with and without KMS.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exit, aws_cli, plugin_dir, seed_with, training_instance, Env};
use sm_ssh_integration::world::{Faults, Seed, SessionPreferences};

const INSTANCE: &str = "mi-0c1d2e3f4a5b6c7d8";
const KEY: &str = "alias/session-manager";
const PROMPT: &str = "fake-shell$ ";

fn env(kms: bool) -> Env {
    let mut seed: Seed = seed_with(vec![training_instance(INSTANCE, "my-job", 1_700_000_000)]);
    seed.session_preferences = SessionPreferences {
        shell_profile: format!("PS1='{PROMPT}'"),
        ..SessionPreferences::default()
    };
    if kms {
        seed.kms_keys = vec![KEY.to_owned()];
        seed.session_preferences.kms_key_id = KEY.to_owned();
    }
    Env::start(seed)
}

/// A tmux server of the test's own, running one command in a 100×30 window.
struct Tmux {
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Runs `command` (a shell line) in a fresh terminal with `env`'s
    /// variables; `stty -a` is recorded before and after it, then its status.
    fn start(env: &Env, extra: &[(String, String)], command: &str) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let mut vars: Vec<(String, String)> = env.fake.env();
        vars.push(("AWS_ENDPOINT_URL".into(), env.fake.endpoint()));
        vars.push(("HOME".into(), env.home().display().to_string()));
        vars.push(("SM_SSH_HOME".into(), env.data_dir().display().to_string()));
        vars.push(("PATH".into(), std::env::var("PATH").unwrap()));
        vars.push(("TERM".into(), "xterm-256color".into()));
        // Later exports win: the test's own come last.
        vars.extend(extra.iter().cloned());
        let exports: String = vars
            .iter()
            .map(|(k, v)| format!("export {k}='{v}'\n"))
            .collect();
        let d = dir.path().display();
        let script = format!(
            "#!/bin/sh\n{exports}stty -a > {d}/before\n{command}\necho \"exited with $?\"\nstty -a > {d}/after\nexec sleep 600\n"
        );
        let path = dir.path().join("run.sh");
        std::fs::write(&path, script).unwrap();
        // No status line: the pane is the whole 100×30 window.
        let config = dir.path().join("tmux.conf");
        std::fs::write(&config, "set -g status off\n").unwrap();
        let tmux = Tmux { socket, dir };
        let status = tmux
            .command()
            .arg("-f")
            .arg(&config)
            .args(["new-session", "-d", "-x", "100", "-y", "30"])
            .arg(format!("sh {}", path.display()))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("TERM", "xterm-256color")
            .status()
            .unwrap();
        assert!(status.success(), "tmux starts");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(&self.socket);
        command
    }

    fn keys(&self, keys: &[&str]) {
        let status = self.command().arg("send-keys").args(keys).status().unwrap();
        assert!(status.success());
    }

    /// Types a line and Enter.
    fn line(&self, text: &str) {
        self.keys(&["-l", text]);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-J", "-S", "-200"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the screen shows `text` `times` times (a safety-net
    /// timeout only: the condition is what is awaited).
    #[track_caller]
    fn wait_for_count(&self, text: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} on screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[track_caller]
    fn wait_for(&self, text: &str) -> String {
        self.wait_for_count(text, 1)
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

fn sm_ssh_shell() -> String {
    format!("{} shell {INSTANCE}", env!("CARGO_BIN_EXE_sm-ssh"))
}

/// Ends the session with `exit 3` and checks the terminal came back as it was.
#[track_caller]
fn exit_and_check_the_terminal(tmux: &Tmux) {
    tmux.line("exit 3");
    let screen = tmux.wait_for("exited with ");
    assert!(
        screen.contains("Exiting session with sessionId"),
        "{screen}"
    );
    // A shell session reports no exit status (the agent sends none for a pty): 0.
    assert!(screen.contains("exited with 0"), "{screen}");
    tmux.wait_for_count("exited with", 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.file("after").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first line holds the window size, which the test changed.
    let settings = |name: &str| -> Vec<String> {
        tmux.file(name).lines().skip(1).map(str::to_owned).collect()
    };
    assert!(!settings("before").is_empty());
    assert_eq!(settings("before"), settings("after"), "stty -a differs");
}

#[test]
fn a_shell_in_a_real_terminal() {
    let env = env(false);
    let tmux = Tmux::start(&env, &[], &sm_ssh_shell());
    tmux.wait_for(PROMPT);
    tmux.line("echo hello-$((6*7))");
    tmux.wait_for("hello-42");
    tmux.line("stty size");
    tmux.wait_for("30 100");
    let status = tmux
        .command()
        .args(["resize-window", "-x", "91", "-y", "27"])
        .status()
        .unwrap();
    assert!(status.success());
    tmux.line("stty size");
    tmux.wait_for("27 91");
    tmux.line("sleep 100; echo not-interrupted");
    tmux.wait_for("sleep 100; echo not-interrupted");
    tmux.keys(&["C-c"]);
    tmux.line("echo still-$((1+1))-here");
    let screen = tmux.wait_for("still-2-here");
    // Only the typed command line: `sleep` was interrupted, and the whole line with it.
    assert_eq!(screen.matches("not-interrupted").count(), 1, "{screen}");
    exit_and_check_the_terminal(&tmux);
    let started = env
        .fake
        .events()
        .into_iter()
        .find(|e| e.action == "ssm:StartSession")
        .unwrap();
    assert_eq!(
        started.document.as_deref(),
        Some("SSM-SessionManagerRunShell")
    );
}

#[test]
fn a_kms_encrypted_shell() {
    let env = env(true);
    let tmux = Tmux::start(&env, &[], &sm_ssh_shell());
    let screen = tmux.wait_for(PROMPT);
    assert!(
        screen.contains("This session is encrypted using AWS KMS."),
        "{screen}"
    );
    tmux.line("echo secret-$((2*3))");
    tmux.wait_for("secret-6");
    exit_and_check_the_terminal(&tmux);
}

#[test]
fn a_shell_survives_websocket_cuts_every_2_s_without_loss_or_repeats() {
    let env = env(false);
    env.fake.set_faults(Faults {
        cut_every_ms: Some(2000),
        ..Faults::default()
    });
    let tmux = Tmux::start(&env, &[], &sm_ssh_shell());
    tmux.wait_for(PROMPT);
    tmux.line("for i in 1 2 3 4 5 6; do echo tick-$i; sleep 1; done; echo ticked");
    let screen = tmux.wait_for("\nticked");
    for i in 1..=6 {
        assert_eq!(
            screen.matches(&format!("tick-{i}\n")).count(),
            1,
            "{screen}"
        );
    }
    tmux.line("echo typed-$((3+4))");
    tmux.wait_for("typed-7");
    let resumed = env
        .fake
        .events()
        .iter()
        .filter(|e| e.action == "ssm:ResumeSession")
        .count();
    assert!(
        resumed >= 2,
        "the websocket was cut and resumed ({resumed})"
    );
    exit_and_check_the_terminal(&tmux);
}

#[test]
fn piped_input_reaches_the_shell_and_its_end_ends_it() {
    let env = env(false);
    let mut child = env
        .sm_ssh(["shell", INSTANCE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo piped-$((5*5))\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let (stdout, _) = assert_exit(&output, 0);
    assert!(stdout.contains("piped-25"), "{stdout}");
}

#[test]
fn ssh_to_a_target_without_sshd_suggests_sm_ssh_shell() {
    let env = env(false);
    // No port 22 mapped on the instance: the agent cannot reach an sshd.
    let output = env.run(["proxy", "--push-key", "never", INSTANCE]);
    let (_, stderr) = common::text(&output);
    assert!(
        stderr.contains("Unable to connect to specified port"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sm-ssh shell {INSTANCE}")),
        "{stderr}"
    );
}

fn path_with(dir: &Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

fn aws_cli_shell(kms: bool) {
    let Some(aws) = aws_cli() else { return };
    let env = env(kms);
    let plugins = plugin_dir();
    let command = format!(
        "{} ssm start-session --endpoint-url {} --target {INSTANCE}",
        aws.display(),
        env.fake.endpoint()
    );
    let tmux = Tmux::start(
        &env,
        &[("PATH".into(), path_with(plugins.path()))],
        &command,
    );
    let screen = tmux.wait_for(PROMPT);
    assert!(
        screen.contains("Starting session with SessionId"),
        "{screen}"
    );
    assert_eq!(screen.contains("encrypted using AWS KMS"), kms, "{screen}");
    tmux.line("echo via-cli-$((4*4))");
    tmux.wait_for("via-cli-16");
    tmux.line("exit 3");
    let screen = tmux.wait_for("exited with ");
    // The plugin exits 0, so the AWS CLI does too.
    assert!(screen.contains("exited with 0"), "{screen}");
}

#[test]
fn the_aws_cli_opens_a_shell_through_sm_ssh() {
    aws_cli_shell(false);
}

#[test]
fn the_aws_cli_opens_a_kms_encrypted_shell_through_sm_ssh() {
    aws_cli_shell(true);
}

fn aws_cli_interactive_command(kms: bool) {
    let Some(aws) = aws_cli() else { return };
    let env = env(kms);
    let plugins = plugin_dir();
    let mut command = Command::new(&aws);
    common::isolate(&mut command, env.home());
    for (key, value) in env.fake.env() {
        command.env(key, value);
    }
    let output = command
        .env("SM_SSH_HOME", env.data_dir())
        .env("PATH", path_with(plugins.path()))
        .args([
            "ssm",
            "start-session",
            "--endpoint-url",
            &env.fake.endpoint(),
        ])
        .args([
            "--target",
            INSTANCE,
            "--document-name",
            "AWS-StartInteractiveCommand",
        ])
        .args(["--parameters", "command=echo interactive-$((8*8))"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = assert_exit(&output, 0);
    assert!(stdout.contains("interactive-64"), "{stdout}\n{stderr}");
    assert_eq!(stderr.contains("encrypted using AWS KMS"), kms, "{stderr}");
}

#[test]
fn the_aws_cli_runs_an_interactive_command_through_sm_ssh() {
    aws_cli_interactive_command(false);
}

#[test]
fn the_aws_cli_runs_a_kms_encrypted_interactive_command_through_sm_ssh() {
    aws_cli_interactive_command(true);
}
