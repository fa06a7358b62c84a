//! Not an API: the pure parsers of the `sm-ssh` binary, compiled once more as
//! a library so the fuzz targets (`fuzz/`) and `tests/fuzz_replay.rs` can call
//! them. The binary keeps its own module tree (`src/main.rs`) and does not
//! link this library; the files are shared with `#[path]`, so nothing moved.

#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
#[path = "cmd/plugin/args.rs"]
pub mod plugin_args;
#[doc(hidden)]
pub mod target;
