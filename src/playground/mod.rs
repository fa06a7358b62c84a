//! The playground: the fake AWS and an embedded SSH server in this process,
//! one training job `demo.training.sagemaker` whose instance's port 22 is
//! that server, and the real client flow run against them.
//!
//! Nothing here touches the user's AWS configuration or `~/.ssh`: the
//! scripted run keeps its key, known hosts and state in a temporary folder,
//! and child processes get the fake's endpoints and dummy credentials only.

pub mod account;
mod broken;
mod demo;
mod flow;
mod serve;

pub use broken::run_broken;
pub use demo::Demo;
pub use flow::{run_flow, Client, FlowOptions};
pub use serve::serve;

/// The name the demo job answers to.
pub const DEMO_HOST: &str = "demo.training.sagemaker";
/// The name the demo Studio space answers to.
pub const DEMO_SPACE_HOST: &str = "demo.space.sagemaker";
