//! `cbrnet-ipam`: cbrnet's node-level allocator as a CNI IPAM plugin.
//!
//! Entered from the C library's start-up, not Rust's, as `cbrnet` is (see its `main.rs`): Rust's
//! `main` wrapper costs system calls this one-shot process does not need.
#![no_main]

use std::ffi::{c_char, c_int};

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    let about = cni_spec::skel::About {
        name: "cbrnet-ipam",
        version: env!("CARGO_PKG_VERSION"),
    };
    cni_spec::skel::run(&about, cbrnet_ipam::node::plugin::handle)
}
