//! The binary's pure parsers, included from `../src` exactly as `src/lib.rs`
//! there does, so the fuzz crate does not build the binary's AWS SDK
//! dependencies.

#[path = "../../src/fuzzing.rs"]
pub mod fuzzing;
#[path = "../../src/cmd/plugin/args.rs"]
pub mod plugin_args;
#[path = "../../src/target.rs"]
pub mod target;
