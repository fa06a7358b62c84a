//! The native path: targets Session Manager resolves itself
//! (`sagemaker-cluster:…`, `sagemaker-training-job:…`, `ecs:…`), passed to
//! ssm:StartSession unchanged. SSM does not describe them, so nothing is
//! checked before the session starts, and SendCommand cannot reach them.

use super::{Detail, KeyInstall, Liveness, Path, Pin, Reach};
use crate::target::Target;

/// The reach of a native target: itself.
pub fn reach_from(target: &Target) -> Reach {
    let id = target.to_string();
    Reach {
        path: Path::Native,
        session_target: id.clone(),
        name: id.clone(),
        default_user: target.default_user(),
        key: KeyInstall::Impossible("SendCommand does not reach native Session Manager targets"),
        pin: Pin {
            alias: id.clone(),
            binding: id,
        },
        liveness: Liveness::Unknown,
        detail: Detail::Native,
        sshd: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_targets_pass_unchanged_without_a_key() {
        let target = Target::parse("sagemaker-training-job:job_algo-1").unwrap();
        let reach = reach_from(&target);
        assert_eq!(reach.session_target, "sagemaker-training-job:job_algo-1");
        assert_eq!(reach.liveness, Liveness::Unknown);
        assert!(matches!(reach.key, KeyInstall::Impossible(_)));
        assert_eq!(reach.default_user, "root");
    }
}
