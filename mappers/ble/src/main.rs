//! `mapper-ble`: the Bluetooth Low Energy mapper binary.

fn main() -> std::process::ExitCode {
    mapper_sdk::main("ble", mapper_ble::BleDriver::default())
}
