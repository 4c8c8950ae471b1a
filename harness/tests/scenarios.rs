//! The behaviour suite as part of `cargo test`: every scenario of this repository's project on every
//! environment this machine can host, with the parity comparison. The logic (environment selection,
//! `AGL_PARITY_ENVS`, `AGL_PARITY_REQUIRE`, libtest arguments, boards) is [`agl_parity::suite`], the same
//! call a team's own crate makes.

fn main() -> std::process::ExitCode {
    agl_parity::suite::main(concat!(env!("CARGO_MANIFEST_DIR"), "/..").as_ref())
}
