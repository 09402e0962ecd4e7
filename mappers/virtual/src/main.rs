//! `mapper-virtual`: the simulated-device mapper binary.

fn main() -> std::process::ExitCode {
    mapper_sdk::main::<mapper_virtual::VirtualDriver>("virtual")
}
