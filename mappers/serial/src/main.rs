//! `mapper-serial`: the serial line-protocol mapper binary.

fn main() -> std::process::ExitCode {
    mapper_sdk::main("serial", mapper_serial::SerialDriver::default())
}
