//! Version 1 of the hot-swap test service. `swap-v2` builds the same
//! handler with another version string, so the two differ only visibly.

const VERSION: &str = "v1";

mod handler;
