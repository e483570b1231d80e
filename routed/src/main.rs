//! `cbrnet-routed`: the per-node route daemon. Not built yet (issue 3); this binary only
//! says so, so that nobody mistakes it for a working daemon.
fn main() {
    eprintln!("cbrnet-routed: not implemented yet (see ARCHITECTURE.md, issue 3)");
    std::process::exit(2);
}
