//! `agl-vmm`: see [`agl_vmm::cli`].

fn main() {
    std::process::exit(agl_vmm::cli::main());
}
