//! `cbrnet-ipam`: cbrnet's node-level allocator as a CNI IPAM plugin.
fn main() {
    cni_spec::skel::run(cbrnet_ipam::node::plugin::handle)
}
