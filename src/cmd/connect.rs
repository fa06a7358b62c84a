//! `sm-ssh connect`: run the system `ssh` through `sm-ssh proxy`, with the
//! right user, our key and host keys pinned per instance id.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::Global;
use crate::keypush::PushKey;
use crate::path::{self, Control};
use crate::resolve::ResolveArgs;
use crate::sshconfig::{self, Paths};
use crate::target::Target;
use crate::warm::Warm;
use crate::{aws, keys};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Login user (default: root for jobs, endpoints and notebooks, sagemaker-user for Studio).
    #[arg(long)]
    pub user: Option<String>,
    /// Port of sshd on the instance.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// When to install our public key on the instance with SendCommand.
    #[arg(long, value_enum, default_value_t)]
    pub push_key: PushKey,
    #[command(flatten)]
    pub resolve: ResolveArgs,
    /// `<name>.<kind>.sagemaker`, `mi-…` or another target `sm-ssh list` shows.
    pub target: String,
    /// Arguments for ssh: options such as -L, -R, -A, then an optional remote command.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ssh_args: Vec<String>,
}

/// The ssh client to run (tests and unusual installs may point elsewhere).
const SSH_ENV: &str = "SM_SSH_SSH";

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let target = Target::parse(&args.target)?;
    let sdk = aws::load(global).await;
    let control = Control::new(&sdk, path::select(&target));
    let warm = Warm::open(&sdk, global, &target, &args.resolve, &control).await;
    let mut fresh = false;
    loop {
        let (reach, cached) = warm.reach(fresh).await?;
        // No sshd (unless the user names the port of one of their own): a shell.
        if !reach.sshd && args.port == 22 {
            return super::connect_shell::run(
                &sdk,
                &reach,
                &args.target,
                args.user.as_deref(),
                &args.ssh_args,
            )
            .await;
        }
        let user = args.user.as_deref().unwrap_or(reach.default_user);
        // The login user differs by orchestrator there (ubuntu, ec2-user): say which.
        if reach.path == path::Path::HyperPod {
            eprintln!("sm-ssh: logging in to {} as {user}", args.target);
        }
        // Installed here rather than in the ProxyCommand so its errors keep their exit codes.
        path::install_key(&sdk, &reach, user, args.push_key).await?;
        // ssh reads the key as it starts: it must exist before.
        keys::Identity::ensure()?;
        let paths = Paths::current()?;
        let plan = SshPlan {
            paths: &paths,
            global,
            label: &args.target,
            session_target: &reach.session_target,
            host_key_alias: &reach.pin.alias,
            user,
            port: args.port,
            ssh_args: &args.ssh_args,
        };
        let code = run_ssh(plan.argv()).await?;
        // The ProxyCommand drops a cached instance that StartSession calls
        // gone: no session was opened, so resolving again and retrying is safe.
        if cached && code == ExitCode::from(255) && !warm.still_cached(&reach) {
            fresh = true;
            continue;
        }
        return Ok(code);
    }
}

/// Runs the system ssh with `argv` and passes its exit status on.
/// Starts the ssh client (`SM_SSH_SSH` names another one) with `argv`;
/// `kill_on_drop` kills it if the caller gives up on it.
pub fn spawn_ssh(argv: Vec<String>, kill_on_drop: bool) -> anyhow::Result<tokio::process::Child> {
    let ssh = std::env::var_os(SSH_ENV).unwrap_or_else(|| "ssh".into());
    tokio::process::Command::new(&ssh)
        .args(argv)
        .kill_on_drop(kill_on_drop)
        .spawn()
        .with_context(|| {
            format!(
                "cannot run `{}`: install the OpenSSH client (ssh) or set {SSH_ENV}",
                ssh.to_string_lossy()
            )
        })
}

pub async fn run_ssh(argv: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut child = spawn_ssh(argv, false)?;
    // Ctrl-C belongs to ssh (it is in our process group): outlive it to pass on its status.
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for ssh")?,
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    // ssh exits 255 for its own errors; a signal death is reported the same way.
    let code = status.code().unwrap_or(255);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}

/// Everything that goes into the ssh command line.
pub struct SshPlan<'a> {
    /// This binary (for ProxyCommand), our key and known-hosts file.
    pub paths: &'a Paths,
    pub global: &'a Global,
    /// What the user typed: the host name ssh shows.
    pub label: &'a str,
    /// What the ProxyCommand starts the session on.
    pub session_target: &'a str,
    /// The name ssh pins the host key under.
    pub host_key_alias: &'a str,
    pub user: &'a str,
    pub port: u16,
    pub ssh_args: &'a [String],
}

impl SshPlan<'_> {
    /// The ssh arguments (without `ssh` itself). The user's options come first
    /// so that their `-o` settings win (ssh keeps the first value it sees).
    pub fn argv(&self) -> Vec<String> {
        let (options, command) = split_ssh_args(self.ssh_args);
        let mut argv = options;
        let mut proxy = vec![self.paths.exe.display().to_string()];
        if let Some(profile) = &self.global.profile {
            proxy.extend(["--profile".into(), profile.clone()]);
        }
        if let Some(region) = self.global.region() {
            proxy.extend(["--region".into(), region.to_owned()]);
        }
        if self.global.verbose > 0 {
            proxy.push(format!("-{}", "v".repeat(self.global.verbose.into())));
        }
        proxy.extend([
            "proxy".into(),
            "--push-key".into(),
            "never".into(),
            "--port".into(),
            "%p".into(),
            "--label".into(),
            self.label.into(),
            self.session_target.into(),
        ]);
        let proxy_command = proxy
            .iter()
            .map(|word| {
                if word == "%p" {
                    word.clone()
                } else {
                    // ssh expands %-tokens in ProxyCommand before the shell sees it.
                    shell_quote(word).replace('%', "%%")
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        argv.extend(["-o".to_owned(), format!("ProxyCommand={proxy_command}")]);
        argv.extend(["-o".to_owned(), format!("Port={}", self.port)]);
        argv.extend(sshconfig::ssh_options(
            self.paths,
            self.user,
            Some(self.host_key_alias),
        ));
        argv.push("--".into());
        argv.push(self.label.into());
        argv.extend(command);
        argv
    }
}

/// ssh's options that take a value (from ssh(1)'s synopsis).
const SSH_OPTIONS_WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";

/// Splits ssh arguments into options and the remote command: options run up
/// to the first word that is not an option (or up to `--`).
fn split_ssh_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut options = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            return (options, std::iter::once(arg).chain(rest).cloned().collect());
        }
        options.push(arg.clone());
        // `-L8080:x:80` carries its value; `-L 8080:x:80` takes the next word.
        // In a cluster like `-NL`, the last letter decides.
        let letters = &arg[1..];
        for (i, letter) in letters.char_indices() {
            if SSH_OPTIONS_WITH_VALUE.contains(letter) {
                if i + letter.len_utf8() == letters.len() {
                    if let Some(value) = rest.next() {
                        options.push(value.clone());
                    }
                }
                break;
            }
        }
    }
    (options, rest.cloned().collect())
}

/// Quotes one word for `/bin/sh`.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn ssh_args_split_into_options_and_command() {
        let (o, c) = split_ssh_args(&strings(&["-L", "8080:localhost:80", "-A", "uname", "-a"]));
        assert_eq!(o, strings(&["-L", "8080:localhost:80", "-A"]));
        assert_eq!(c, strings(&["uname", "-a"]));
        let (o, c) = split_ssh_args(&strings(&["-NL8080:x:80", "-vR", "9:y:9"]));
        assert_eq!(o, strings(&["-NL8080:x:80", "-vR", "9:y:9"]));
        assert!(c.is_empty());
        let (o, c) = split_ssh_args(&strings(&["-t", "--", "-weird-command"]));
        assert_eq!(o, strings(&["-t"]));
        assert_eq!(c, strings(&["-weird-command"]));
    }

    #[test]
    fn argv_pins_host_keys_and_proxies_through_this_binary() {
        let global = Global {
            profile: Some("dev team".into()),
            region: vec!["eu-west-1".into()],
            verbose: 0,
        };
        let args = strings(&["-L", "8080:localhost:80", "echo", "hi"]);
        let paths = Paths {
            exe: PathBuf::from("/opt/sm ssh/100%/sm-ssh"),
            identity: PathBuf::from("/home/u/.local/share/sm-ssh/id_ed25519"),
            known_hosts: PathBuf::from("/home/u/.local/share/sm-ssh/known_hosts"),
        };
        let plan = SshPlan {
            paths: &paths,
            global: &global,
            label: "job.training.sagemaker",
            session_target: "mi-0123456789abcdef0",
            host_key_alias: "mi-0123456789abcdef0",
            user: "root",
            port: 22,
            ssh_args: &args,
        };
        let argv = plan.argv();
        assert_eq!(&argv[..2], &strings(&["-L", "8080:localhost:80"])[..]);
        assert!(argv.contains(&"ProxyCommand='/opt/sm ssh/100%%/sm-ssh' --profile 'dev team' --region eu-west-1 proxy --push-key never --port %p --label job.training.sagemaker mi-0123456789abcdef0".to_owned()));
        assert!(argv.contains(&"HostKeyAlias=mi-0123456789abcdef0".to_owned()));
        assert!(argv.contains(&"StrictHostKeyChecking=accept-new".to_owned()));
        assert!(argv.contains(&"IdentitiesOnly=yes".to_owned()));
        assert!(argv.contains(&"ServerAliveCountMax=8".to_owned()));
        assert_eq!(
            &argv[argv.len() - 4..],
            &strings(&["--", "job.training.sagemaker", "echo", "hi"])[..]
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/usr/bin/sm-ssh"), "/usr/bin/sm-ssh");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
