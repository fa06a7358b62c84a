//! A local stand-in for the parts of AWS that sm-ssh talks to: the SSM API,
//! STS, the SageMaker API, and the Session Manager data channel with the
//! agent behind it.
//! Tests, benchmarks and the playground run against it; see `docs/fake-aws.md`.

pub mod auth;
mod caller;
pub mod config;
pub mod datachannel;
pub mod ec2;
pub mod iam;
pub mod kms;
pub mod logs;
pub mod moto;
pub mod openssh;
mod paging;
pub mod sagemaker;
pub mod sandbox;
pub mod server;
mod sftp;
pub mod sshd;
mod ssm;
mod sts;
pub mod world;

pub use server::FakeAws;
