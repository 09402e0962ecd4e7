//! Compiles `proto/api.proto` with protox (a pure-Rust protobuf compiler), so no
//! system `protoc` is needed to build this crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let fds = protox::compile(["api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Ordered maps: the same content always encodes to the same bytes, so
        // messages can be compared by fingerprint; decoding needs no hashing.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
