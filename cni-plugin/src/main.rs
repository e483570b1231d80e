//! `cbrnet`: the CNI plugin binary.
fn main() {
    let about = cni_spec::skel::About {
        name: "cbrnet",
        version: env!("CARGO_PKG_VERSION"),
    };
    cni_spec::skel::run(&about, cbrnet::commands::run)
}
