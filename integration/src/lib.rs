//! A local stand-in for the parts of AWS that sm-ssh talks to: the SSM API,
//! STS, and the Session Manager data channel with the agent behind it.
//! Tests, benchmarks and the playground run against it; see `docs/fake-aws.md`.

pub mod moto;
pub mod datachannel;
pub mod world;
pub mod sshd;
