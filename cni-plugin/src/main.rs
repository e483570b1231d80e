//! `cbrnet`: the CNI plugin binary.
fn main() {
    cni_spec::skel::run(cbrnet::commands::run)
}
