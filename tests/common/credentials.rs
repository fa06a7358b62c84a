//! Temporary credentials that expire: a profile whose `credential_process`
//! mints keys from the fake, valid for a few seconds, until "the SSO session
//! ends". Shared by the credential test and the soak.

use std::path::PathBuf;
use std::process::Command;

use sm_ssh_integration::server::MINT_PATH;

use super::Env;

/// The profile's name.
pub const PROFILE: &str = "expiring";

/// Writes a profile whose `credential_process` fetches keys valid for
/// `seconds` from the fake while the file `allow` exists, and fails ("log in
/// again") once it is gone. Returns the `allow` file.
pub fn expiring_profile(env: &Env, seconds: u64) -> PathBuf {
    let dir = env.home().join("creds");
    std::fs::create_dir_all(&dir).unwrap();
    let allow = dir.join("allow");
    std::fs::write(&allow, "").unwrap();
    let port = env.fake.addr().port();
    let script = dir.join("credentials.sh");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env bash\n\
             [ -e '{allow}' ] || {{ echo 'the SSO session has expired' >&2; exit 1; }}\n\
             exec 3<>/dev/tcp/127.0.0.1/{port}\n\
             printf 'POST {MINT_PATH}?seconds={seconds} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\
             Content-Length: 0\\r\\nConnection: close\\r\\n\\r\\n' >&3\n\
             sed '1,/^\\r$/d' <&3\n",
            allow = allow.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("config"),
        format!(
            "[profile {PROFILE}]\ncredential_process = {}\n",
            script.display()
        ),
    )
    .unwrap();
    allow
}

/// Makes `command` (sm-ssh, or ssh whose ProxyCommand runs sm-ssh) use the
/// expiring profile and no static keys.
pub fn use_expiring_profile(env: &Env, command: &mut Command) {
    let dir = env.home().join("creds");
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_PROFILE", PROFILE)
        .env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"));
}
