//! `sm-ssh config print|install` and `sm-ssh completions`, checked with the
//! real OpenSSH client's own reading of the config (`ssh -G`).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn env() -> Env {
    Env::start(seed_with(Vec::new()))
}

/// `ssh -G -F <config> <host>`: the options OpenSSH would use, lowercased keys.
fn ssh_g(config: &Path, host: &str) -> Vec<(String, String)> {
    let output = Command::new("ssh")
        .args(["-G", "-F"])
        .arg(config)
        .arg(host)
        .output()
        .expect("the OpenSSH client is installed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn option<'a>(options: &'a [(String, String)], key: &str) -> &'a str {
    options
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {options:?}"))
}

#[test]
fn install_twice_leaves_one_block_and_the_rest_of_the_file() {
    let env = env();
    let ssh_dir = env.home().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let config = ssh_dir.join("config");
    let original =
        "Host work\n    HostName work.example.com\n    User me\n\nHost *\n    User everyone\n";
    std::fs::write(&config, original).unwrap();

    let (stdout, stderr) = assert_exit(&env.run(["config", "install"]), 0);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("Installed the sm-ssh block"), "{stderr}");
    assert!(stderr.contains("ssh-ed25519 AAAA"), "{stderr}");
    let once = std::fs::read_to_string(&config).unwrap();
    let (_, stderr) = assert_exit(&env.run(["config", "install"]), 0);
    assert!(
        stderr.contains("already has the current sm-ssh block"),
        "{stderr}"
    );
    let twice = std::fs::read_to_string(&config).unwrap();
    assert_eq!(once, twice);
    assert_eq!(twice.matches("# >>> sm-ssh >>>").count(), 1);
    assert_eq!(twice.matches("# <<< sm-ssh <<<").count(), 1);
    assert!(twice.ends_with(original), "{twice}");
    let backup = std::fs::read_to_string(ssh_dir.join("config.sm-ssh.bak")).unwrap();
    assert_eq!(backup, original);

    // The key the block names exists and is private.
    let key = env.data_dir().join("id_ed25519");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // OpenSSH reads it as intended: our hosts get our options, others keep theirs.
    let job = ssh_g(&config, "my-job.training.sagemaker");
    assert_eq!(option(&job, "user"), "root");
    assert_eq!(
        option(&job, "proxycommand"),
        format!("{} proxy --user %r %h", env!("CARGO_BIN_EXE_sm-ssh"))
    );
    assert_eq!(option(&job, "identityfile"), key.to_string_lossy());
    assert_eq!(option(&job, "identitiesonly"), "yes");
    assert_eq!(option(&job, "stricthostkeychecking"), "accept-new");
    assert_eq!(option(&job, "serveraliveinterval"), "15");
    assert_eq!(option(&job, "serveralivecountmax"), "8");
    let studio = ssh_g(&config, "default.space.d-abc.studio.sagemaker");
    assert_eq!(option(&studio, "user"), "sagemaker-user");
    let space = ssh_g(&config, "my-space.d-abc.space.sagemaker");
    assert_eq!(option(&space, "user"), "sagemaker-user");
    assert!(option(&space, "proxycommand").contains("proxy --user %r %h"));
    let work = ssh_g(&config, "work");
    assert_eq!(option(&work, "user"), "me");
    assert_eq!(option(&work, "hostname"), "work.example.com");
    let elsewhere = ssh_g(&config, "example.org");
    assert_eq!(option(&elsewhere, "user"), "everyone");
    assert!(!elsewhere.iter().any(|(k, _)| k == "proxycommand"));
}

#[test]
fn install_creates_the_file_and_print_writes_only_the_block() {
    let env = env();
    let config = env.home().join("elsewhere/config");
    assert_exit(
        &env.run(["config", "install", "--file", config.to_str().unwrap()]),
        0,
    );
    let written = std::fs::read_to_string(&config).unwrap();
    let (printed, _) = assert_exit(&env.run(["config", "print"]), 0);
    assert_eq!(written, printed);
    let (with_profile, _) = assert_exit(&env.run(["--profile", "dev", "config", "print"]), 0);
    assert!(
        with_profile.contains("--profile dev proxy --user %r %h"),
        "{with_profile}"
    );
}

#[test]
fn completions_and_man_page() {
    let env = env();
    let (bash, _) = assert_exit(&env.run(["completions", "bash"]), 0);
    assert!(bash.contains("complete -F _sm__ssh"), "{bash}");
    assert!(bash.contains("connect"), "{bash}");
    let (zsh, _) = assert_exit(&env.run(["completions", "zsh"]), 0);
    assert!(zsh.starts_with("#compdef sm-ssh"), "{zsh}");
    let (man, _) = assert_exit(&env.run(["completions", "man"]), 0);
    assert!(
        man.starts_with(".ie") || man.contains(".TH sm-ssh"),
        "{man}"
    );
    assert_exit(&env.run(["completions", "tcsh"]), 2);
}
