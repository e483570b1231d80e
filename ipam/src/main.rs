//! `cbrnet-ipam`: cbrnet's node-level allocator as a CNI IPAM plugin.
fn main() {
    let about = cni_spec::skel::About {
        name: "cbrnet-ipam",
        version: env!("CARGO_PKG_VERSION"),
    };
    cni_spec::skel::run(&about, cbrnet_ipam::node::plugin::handle)
}
