//! `{{project-name}}`: the mapper binary. Flags, `config.yaml`, logging,
//! SIGTERM/Ctrl-C and the whole runtime come from [`mapper_sdk::main`]; run
//! it with `--help` for the flags.

fn main() -> std::process::ExitCode {
    mapper_sdk::main({{crate_name}}::PROTOCOL, {{crate_name}}::{{driver_type}}::default())
}
