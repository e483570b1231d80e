//! `cbrnet`: the CNI plugin binary.
//!
//! Entered from the C library's start-up, not Rust's: the plugin runs once per pod start, and
//! Rust's `main` wrapper sets up what this process never uses (a stack-overflow handler on an
//! alternate stack, found by reading /proc/self/maps): a dozen system calls on the pod start-up
//! path. `skel::run` does the parts that matter (descriptors 0-2 open, SIGPIPE ignored) and
//! catches panics, which must not unwind into C.
#![no_main]

use std::ffi::{c_char, c_int};

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    let about = cni_spec::skel::About {
        name: "cbrnet",
        version: env!("CARGO_PKG_VERSION"),
    };
    cni_spec::skel::run(&about, cbrnet::commands::run)
}
