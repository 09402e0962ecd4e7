//! `mapper-modbus`: the Modbus TCP/RTU mapper binary.

fn main() -> std::process::ExitCode {
    mapper_sdk::main("modbus", mapper_modbus::ModbusDriver::default())
}
