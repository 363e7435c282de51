//! Generates etcd's v3 API (messages, clients and server traits) from the
//! definitions in `proto/`. protox compiles them in Rust, so building keel
//! needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors =
        protox::compile(["rpc.proto", "v3lock.proto", "v3election.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
