//! `mapper-virtual`: the simulated-device mapper binary.

fn main() -> std::process::ExitCode {
    mapper_sdk::main("virtual", mapper_virtual::VirtualDriver)
}
