//! The peers sm-ssh is compared with, installed from the registries on first
//! use: the `aws-ssm-bridge` crate (a program under bench/peers/ with its own
//! workspace and target folder), sagemaker-ssh-helper and the AWS CLI (a venv
//! at target/bench-venv), and moto for the SageMaker calls of `list`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Builds the aws-ssm-bridge peer; returns its executable.
pub fn build_bridge(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("bench/peers/aws-ssm-bridge");
    run(
        Command::new("cargo")
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            // Its own target folder: a separate workspace must not share ours.
            .env_remove("CARGO_TARGET_DIR"),
        "build the aws-ssm-bridge peer",
    )?;
    Ok(dir.join("target/release/aws-ssm-bridge-peer"))
}

/// Installs the Python peers; returns the venv's bin folder.
pub fn install_python(root: &Path) -> anyhow::Result<PathBuf> {
    run(
        &mut Command::new(root.join("bench/peers/python/install")),
        "install sagemaker-ssh-helper and awscli",
    )?;
    Ok(root.join("target/bench-venv/bin"))
}

/// The `moto_server` scripts/test uses, installed the same way when missing.
pub fn moto_server(root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SM_SSH_TEST_MOTO") {
        return Ok(PathBuf::from(path));
    }
    let venv = root.join("target/test-venv");
    let server = venv.join("bin/moto_server");
    if !server.exists() {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "create target/test-venv",
        )?;
        run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "-q",
                "moto[server]==5.*",
                "awscli",
            ]),
            "install moto",
        )?;
    }
    Ok(server)
}

/// A folder holding `session-manager-plugin` → sm-ssh, for the AWS CLI's PATH.
pub fn plugin_dir(sm_ssh: &Path, scratch: &Path) -> anyhow::Result<PathBuf> {
    let dir = scratch.join("plugin-bin");
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("session-manager-plugin");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(sm_ssh, &link)?;
    Ok(dir)
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("could not {what}"))?;
    if !output.status.success() {
        bail!(
            "could not {what}: {}",
            crate::runner::tail(&String::from_utf8_lossy(&output.stderr))
        );
    }
    Ok(())
}
