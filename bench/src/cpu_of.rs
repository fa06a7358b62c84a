//! `sm-ssh-bench cpu-of COMMAND…`: runs COMMAND and reports the CPU of every
//! process it started, orphans included. A shell's `times` misses what
//! outlives its parent: ssh signals its ProxyCommand and exits without
//! waiting for it, so `scp` through `sm-ssh proxy` would look free of the
//! proxy. As a child subreaper this process adopts such orphans and reaps
//! them, and the kernel adds their time to its own children's.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{self, WaitOptions};

/// What the last line of stderr starts with; the CPU seconds follow.
pub const PREFIX: &str = "cpu-of: ";
/// How long adopted processes may outlive the command.
const ORPHANS_GRACE: Duration = Duration::from_secs(30);

pub fn run(command: &[OsString]) -> ! {
    let code = match measure(command) {
        Ok((code, cpu)) => {
            eprintln!("{PREFIX}{cpu:.3}");
            code
        }
        Err(e) => {
            eprintln!("sm-ssh-bench cpu-of: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn measure(command: &[OsString]) -> anyhow::Result<(i32, f64)> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no command given"))?;
    // Any pid turns the attribute on; None turns it off.
    process::set_child_subreaper(Some(process::getpid()))?;
    let status = std::process::Command::new(program).args(args).status()?;
    reap_orphans()?;
    let cpu = crate::procfs::children_cpu_seconds(std::process::id())
        .ok_or_else(|| anyhow::anyhow!("cannot read /proc/self/stat"))?;
    Ok((status.code().unwrap_or(1), cpu))
}

fn reap_orphans() -> anyhow::Result<()> {
    let deadline = Instant::now() + ORPHANS_GRACE;
    loop {
        match process::wait(WaitOptions::NOHANG) {
            Err(Errno::CHILD) => return Ok(()),
            Err(Errno::INTR) | Ok(Some(_)) => {}
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                anyhow::bail!("a process the command started outlived it by {ORPHANS_GRACE:?}")
            }
            Err(e) => return Err(e.into()),
        }
    }
}
