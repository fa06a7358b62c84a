//! `sm-ssh playground`: the scripted flow with OpenSSH and with the built-in
//! client, and `--serve` driven from "another terminal" (this test).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

const SM_SSH: &str = env!("CARGO_BIN_EXE_sm-ssh");

/// `sm-ssh playground <args>` with a private HOME and data dir.
fn playground(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(SM_SSH);
    command.arg("playground").args(args);
    common::isolate(&mut command, home);
    command.env("SM_SSH_HOME", home.join("sm-ssh-data"));
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_flow(out: &Output, client: &str) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for step in [
        "1/4 resolved demo.training.sagemaker to mi-",
        "2/4 pushed key SHA256:",
        "4/4 the command exited with status 0",
        "saw logins as root",
        "and without sshd: `sm-ssh shell demo.training.sagemaker`",
        "Exiting session with sessionId",
    ] {
        assert!(stderr.contains(step), "no {step:?} in:\n{stderr}");
    }
    assert!(stderr.contains(client), "not with {client}:\n{stderr}");
    // Computed on the far side, so it cannot come from anywhere else.
    assert_eq!(stdout, "marker-42\n", "stderr:\n{stderr}");
    // And again through the shell session (the typed line shows only the formula).
    assert!(stderr.contains("marker-42"), "{stderr}");
}

#[test]
fn scripted_run_with_openssh() {
    let home = tempfile::tempdir().unwrap();
    let out = playground(home.path(), &["--command", "echo marker-$((6*7))"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_flow(&out, "with OpenSSH");
}

#[test]
fn scripted_run_with_the_builtin_client_when_openssh_is_not_installed() {
    let home = tempfile::tempdir().unwrap();
    // A PATH with every program of this machine but ssh.
    let bin = home.path().join("bin-without-ssh");
    std::fs::create_dir(&bin).unwrap();
    for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let link = bin.join(entry.file_name());
            if entry.file_name() != "ssh" && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    assert!(!bin.join("ssh").exists());

    let out = playground(home.path(), &["--command", "echo marker-$((6*7))"])
        .env("PATH", &bin)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_flow(&out, "with the built-in client");
}

/// `sm-ssh playground --serve`, stopped with SIGTERM when dropped.
struct Serving {
    child: Child,
    env: Vec<(String, String)>,
    ssh_config: String,
}

impl Serving {
    fn start(home: &Path) -> Serving {
        let mut child = playground(home, &["--serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut env = Vec::new();
        let mut ssh_config = None;
        let stdout = BufReader::new(child.stdout.take().unwrap());
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(assignment) = line.strip_prefix("export ") {
                let (key, value) = assignment.split_once('=').unwrap();
                env.push((key.to_string(), value.to_string()));
            }
            if let Some(path) = line.strip_prefix("#   ssh -F ") {
                ssh_config = path.split_whitespace().next().map(str::to_string);
            }
            if line == "# Ctrl-C stops the playground." {
                break;
            }
        }
        Serving {
            child,
            env,
            ssh_config: ssh_config.expect("the ssh config path is printed"),
        }
    }

    /// A command from "another terminal": the printed exports and nothing else of AWS.
    fn command(&self, home: &Path, program: &str) -> Command {
        let mut command = Command::new(program);
        common::isolate(&mut command, home);
        command
            .env("SM_SSH_HOME", home.join("sm-ssh-data"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        command
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_answers_list_ssh_and_forward_from_another_terminal() {
    let home = tempfile::tempdir().unwrap();
    let serving = Serving::start(home.path());
    let keys: Vec<&str> = serving.env.iter().map(|(k, _)| k.as_str()).collect();
    for key in [
        "AWS_ENDPOINT_URL_SSM",
        "AWS_ENDPOINT_URL_STS",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(keys.contains(&key), "{key} not exported: {keys:?}");
    }

    let list = serving
        .command(home.path(), SM_SSH)
        .arg("list")
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        text(&list.stdout).contains("demo.training.sagemaker"),
        "{}",
        text(&list.stdout)
    );

    // `list --json` shows every kind the playground seeds, each with its path.
    let json = serving
        .command(home.path(), SM_SSH)
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(json.status.success(), "{}", text(&json.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    let paths: std::collections::BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap_or_default().to_string();
            (field("host"), field("path"))
        })
        .collect();
    for (host, path) in [
        ("demo.training.sagemaker", "helper"),
        ("demo.d-demo0playgrnd.space.sagemaker", "space"),
        (
            "i-0de0000000000d001.workers.demo.hyperpod.sagemaker",
            "hyperpod",
        ),
        ("debug-demo.training.sagemaker", "remote-debug"),
        ("demo-endpoint.inference.sagemaker", "ssm-access"),
    ] {
        assert!(
            paths.contains(&(host.to_string(), path.to_string())),
            "{host} ({path}) not in {paths:?}"
        );
    }

    // ssh through the printed config: ProxyCommand `sm-ssh proxy %h` pushes the key.
    let ssh = serving
        .command(home.path(), "ssh")
        .args(["-F", &serving.ssh_config, "-o", "BatchMode=yes"])
        .args(["demo.training.sagemaker", "echo via-$((40+2))"])
        .output()
        .unwrap();
    assert!(ssh.status.success(), "{}", text(&ssh.stderr));
    assert_eq!(text(&ssh.stdout), "via-42\n");

    // The demo Studio space: no key, sagemaker:StartSession, the pinned host key.
    assert!(text(&list.stdout).contains("demo.d-demo0playgrnd.space.sagemaker"));
    let space = serving
        .command(home.path(), "ssh")
        .args(["-F", &serving.ssh_config, "-o", "BatchMode=yes"])
        .args(["demo.space.sagemaker", "echo space-$((40+2))"])
        .output()
        .unwrap();
    assert!(space.status.success(), "{}", text(&space.stderr));
    assert_eq!(text(&space.stdout), "space-42\n");

    // A key nobody pushed is refused by the instance's sshd.
    let stranger = home.path().join("stranger");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(keygen.success());
    let config = std::fs::read_to_string(&serving.ssh_config).unwrap();
    let without_key: String = config
        .lines()
        .filter(|line| !line.trim_start().starts_with("IdentityFile"))
        .map(|line| format!("{line}\n"))
        .collect();
    let stranger_config = home.path().join("stranger_config");
    std::fs::write(&stranger_config, without_key).unwrap();
    let refused = serving
        .command(home.path(), "ssh")
        .arg("-F")
        .arg(&stranger_config)
        .args(["-o", "BatchMode=yes", "-i"])
        .arg(&stranger)
        .args(["demo.training.sagemaker", "true"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(255));
    assert!(
        text(&refused.stderr).contains("Permission denied"),
        "{}",
        text(&refused.stderr)
    );

    // sm-ssh forward: the instance's port 22 on a local port answers with the SSH banner.
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut forward = serving
        .command(home.path(), SM_SSH)
        .args([
            "forward",
            "demo.training.sagemaker",
            "-L",
            &format!("{port}:22"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let banner = read_banner_when_listening(port, &mut forward);
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
}

/// Connects to the forwarded port once `sm-ssh forward` listens (it says so
/// on stderr) and reads the server's first line.
fn read_banner_when_listening(port: u16, forward: &mut Child) -> String {
    let stderr = forward.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let mut banner = [0u8; 8];
            stream.read_exact(&mut banner).unwrap();
            return text(&banner);
        }
        // Not listening yet: wait for the next line forward prints.
        match lines.next() {
            Some(Ok(line)) => seen.push_str(&line),
            _ => panic!("sm-ssh forward ended without listening on {port}: {seen}"),
        }
    }
}

/// Bytes no text transformation leaves alone: every byte value, CR LF pairs,
/// a pseudo-random tail, and a length that is no multiple of any buffer.
fn awkward_bytes() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    bytes.extend_from_slice(b"\r\n\n\r\x00\x1b[0m");
    let mut x: u32 = 0x9e37_79b9;
    while bytes.len() < 300_007 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    bytes
}

impl Serving {
    /// ssh through the printed config (its ProxyCommand pushes the key).
    fn ssh(&self, home: &Path, args: &[&str]) -> Output {
        self.command(home, "ssh")
            .args(["-F", &self.ssh_config, "-o", "BatchMode=yes"])
            .args(args)
            .output()
            .unwrap()
    }

    /// The bytes of `path` on the instance, read by `cat` there.
    fn remote_file(&self, home: &Path, path: &str) -> Vec<u8> {
        let out = self.ssh(home, &["demo.training.sagemaker", "cat", path]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        out.stdout
    }

    fn scp(&self, home: &Path, extra: &[&str], from: &str, to: &str) {
        let out = self
            .command(home, "scp")
            .args(["-F", &self.ssh_config, "-o", "BatchMode=yes", "-q"])
            .args(extra)
            .args([from, to])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scp {extra:?} {from} {to}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn scp_sftp_and_paramiko_move_files_byte_identical() {
    let home = tempfile::tempdir().unwrap();
    let serving = Serving::start(home.path());
    let data = awkward_bytes();
    let local = home.path().join("local.bin");
    std::fs::write(&local, &data).unwrap();
    let local = local.display().to_string();
    let host = "demo.training.sagemaker";

    // scp in SFTP mode (OpenSSH 9's default) and in the legacy protocol (-O),
    // each way; the far side's `cat` proves what landed there.
    for (mode, extra) in [("sftp", &[][..]), ("legacy", &["-O"][..])] {
        let name = format!("up-{mode}.bin");
        serving.scp(home.path(), extra, &local, &format!("{host}:{name}"));
        assert!(
            serving.remote_file(home.path(), &name) == data,
            "scp {mode} upload differs"
        );
        let back = home.path().join(format!("down-{mode}.bin"));
        serving.scp(
            home.path(),
            extra,
            &format!("{host}:{name}"),
            &back.display().to_string(),
        );
        assert!(
            std::fs::read(&back).unwrap() == data,
            "scp {mode} download differs"
        );
    }

    // sftp in batch mode: put, list, rename into a new folder, get, clean up.
    let batch = home.path().join("batch");
    let fetched = home.path().join("sftp-down.bin");
    std::fs::write(
        &batch,
        format!(
            "put {local} sftp-up.bin\nls -l sftp-up.bin\nmkdir folder\n\
             rename sftp-up.bin folder/moved.bin\nget folder/moved.bin {}\n\
             chmod 600 folder/moved.bin\nrm folder/moved.bin\nrmdir folder\n",
            fetched.display()
        ),
    )
    .unwrap();
    let sftp = serving
        .command(home.path(), "sftp")
        .args(["-F", &serving.ssh_config, "-o", "BatchMode=yes", "-b"])
        .arg(&batch)
        .arg(host)
        .output()
        .unwrap();
    assert!(sftp.status.success(), "{}", text(&sftp.stderr));
    assert!(
        text(&sftp.stdout).contains(&format!(" {} ", data.len())),
        "ls -l shows the size: {}",
        text(&sftp.stdout)
    );
    assert!(std::fs::read(&fetched).unwrap() == data, "sftp get differs");
    let gone = serving.ssh(home.path(), &[host, "test ! -e folder"]);
    assert!(gone.status.success(), "rm and rmdir left folder behind");

    // paramiko's SFTP client through `sm-ssh proxy`, as Python tools use it.
    let Ok(python) = std::env::var("SM_SSH_TEST_PYTHON") else {
        eprintln!("SM_SSH_TEST_PYTHON is unset (scripts/test sets it); skipping paramiko");
        return;
    };
    let script = home.path().join("paramiko_sftp.py");
    std::fs::write(&script, PARAMIKO_SFTP).unwrap();
    let config = std::fs::read_to_string(&serving.ssh_config).unwrap();
    let setting = |name: &str| {
        let line = config
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {config}"));
        line.trim().trim_matches('"').to_string()
    };
    let downloaded = home.path().join("paramiko-down.bin");
    let out = serving
        .command(home.path(), &python)
        .arg(&script)
        .arg(format!("{SM_SSH} proxy --user root {host}"))
        .args([setting("IdentityFile"), setting("UserKnownHostsFile")])
        .arg(&local)
        .arg(&downloaded)
        .output()
        .unwrap();
    assert!(out.status.success(), "paramiko: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("size {}\n", data.len()));
    assert!(
        serving.remote_file(home.path(), "paramiko.bin") == data,
        "paramiko upload differs"
    );
    assert!(
        std::fs::read(&downloaded).unwrap() == data,
        "paramiko download differs"
    );
}

/// argv: proxy command, private key, known_hosts, file to upload, where to download it.
const PARAMIKO_SFTP: &str = r#"
import sys, paramiko
proxy, key, known_hosts, local, downloaded = sys.argv[1:]
client = paramiko.SSHClient()
client.load_host_keys(known_hosts)
client.connect("demo.training.sagemaker", username="root",
               pkey=paramiko.Ed25519Key.from_private_key_file(key),
               sock=paramiko.ProxyCommand(proxy),
               look_for_keys=False, allow_agent=False)
sftp = client.open_sftp()
sftp.put(local, "paramiko.bin")
print("size", sftp.stat("paramiko.bin").st_size)
sftp.get("paramiko.bin", downloaded)
sftp.close()
client.close()
"#;

#[test]
fn an_unknown_subsystem_is_refused_at_once() {
    let home = tempfile::tempdir().unwrap();
    let serving = Serving::start(home.path());
    // Without the refusal ssh would wait for the subsystem forever.
    let out = serving.ssh(
        home.path(),
        &["-s", "demo.training.sagemaker", "no-such-subsystem"],
    );
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("subsystem request failed"),
        "{}",
        text(&out.stderr)
    );
}

const EXECUTION_ROLE: &str =
    "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole";

/// `sm-ssh doctor --json <args>` from the other terminal: each check's id and status.
fn doctor(serving: &Serving, home: &Path, args: &[&str]) -> Vec<(String, String, String)> {
    let out = serving
        .command(home, SM_SSH)
        .args(["doctor", "--json"])
        .args(args)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(report["exit_code"], out.status.code().unwrap(), "{report}");
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let field = |name: &str| c[name].as_str().unwrap_or_default().to_string();
            (field("id"), field("status"), field("detail"))
        })
        .collect()
}

#[test]
fn doctor_in_the_playground_passes_every_check() {
    let home = tempfile::tempdir().unwrap();
    let serving = Serving::start(home.path());
    // A set-up user has sm-ssh's block in ~/.ssh/config.
    let install = serving
        .command(home.path(), SM_SSH)
        .args(["config", "install"])
        .output()
        .unwrap();
    assert!(install.status.success(), "{}", text(&install.stderr));

    let checks = doctor(&serving, home.path(), &["--role", EXECUTION_ROLE]);
    for (id, status, detail) in &checks {
        // --role names no job, notebook or domain, so no network to check.
        let expected = if id == "network" { "skip" } else { "pass" };
        assert_eq!(status, expected, "{id}: {detail}");
        if id == "attribution" {
            // The playground's notebooks share the role, which assumes itself.
            for notebook in ["demo-notebook-a", "demo-notebook-b"] {
                assert!(detail.contains(notebook), "{detail}");
            }
        }
        if id.ends_with("-policy") {
            assert!(
                detail.contains("confirmed by SimulatePrincipalPolicy"),
                "{id}: {detail}"
            );
        }
    }
    let ids: Vec<&str> = checks.iter().map(|(id, _, _)| id.as_str()).collect();
    // The demo job by name: its execution role, network and remote debugging.
    let job = doctor(&serving, home.path(), &["--job", "demo"]);
    for (id, status, detail) in &job {
        assert_eq!(status, "pass", "--job demo: {id}: {detail}");
    }
    let job_ids: Vec<&str> = job.iter().map(|(id, _, _)| id.as_str()).collect();
    for id in [
        "network",
        "remote-debug",
        "remote-debug-status",
        "remote-debug-network",
        "remote-debug-role",
    ] {
        assert!(job_ids.contains(&id), "no {id} in {job_ids:?}");
    }
    for id in [
        "identity",
        "ssm-tier",
        "role-trust",
        "role-policy",
        "client-policy",
        "managed-instances",
        "attribution",
    ] {
        assert!(ids.contains(&id), "no {id} in {ids:?}");
    }
}

#[test]
fn each_broken_account_fails_exactly_its_check_with_a_fix() {
    let home = tempfile::tempdir().unwrap();
    let out = playground(home.path(), &["--broken"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let expected = [
        ("standard-tier", "ssm-tier"),
        ("role-trust", "role-trust"),
        ("role-policy", "role-policy"),
        ("client-policy", "client-policy"),
        ("explicit-deny", "client-policy"),
        ("group-policy", "client-policy"),
        ("shared-role", "attribution"),
        ("vpc-endpoints", "space-network"),
    ];
    let sections: Vec<&str> = stdout
        .split("# sm-ssh playground --broken ")
        .skip(1)
        .collect();
    assert_eq!(sections.len(), expected.len(), "{stdout}");
    for (section, (kind, check)) in sections.iter().zip(expected) {
        assert!(section.starts_with(kind), "{section}");
        let lines: Vec<&str> = section.lines().collect();
        // Attribution gaps warn (SSH works, CloudTrail cannot tell who): no
        // FAIL then, and one WARN for it besides the fresh machine's ssh-config.
        let label = if check == "attribution" {
            "WARN"
        } else {
            "FAIL"
        };
        let fails: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].starts_with(&format!("{label}  ")))
            .filter(|&i| label == "FAIL" || !lines[i].starts_with("WARN  ssh-config"))
            .collect();
        assert_eq!(fails.len(), 1, "{kind}: {section}");
        if label == "WARN" {
            assert!(!section.contains("\nFAIL  "), "{kind}: {section}");
        }
        assert!(
            lines[fails[0]].starts_with(&format!("{label}  {check}")),
            "{kind}: {section}"
        );
        assert!(
            lines[fails[0] + 1].starts_with("      fix: "),
            "{kind}: {section}"
        );
        assert!(!section.contains("disagrees"), "{kind}: {section}");
    }
}

/// The documented seed file for `sm-ssh-fake --config`: the playground's
/// account without the caller's client policy.
#[test]
fn the_documented_broken_seed_fails_only_the_client_policy() {
    let seed = sm_ssh_integration::config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/playground-broken-seed.json"),
    )
    .unwrap();
    let env = common::Env::start(seed);
    let out = env.run(["doctor", "--json", "--role", EXECUTION_ROLE]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["client-policy"], "{report:#}");
    let passed = |id: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id && c["status"] == "pass")
    };
    for id in ["identity", "ssm-tier", "role-trust", "role-policy"] {
        assert!(passed(id), "{id}: {report:#}");
    }
}
