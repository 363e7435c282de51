//! Generates etcd's v3 API (messages, clients and server traits) from the
//! definitions in `proto/`. protox compiles them in Rust, so building keel
//! needs no `protoc` on the machine. With the `json` feature, pbjson also
//! writes each message's protobuf JSON mapping (what etcd's gateway
//! speaks) from the same descriptors.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors =
        protox::compile(["rpc.proto", "v3lock.proto", "v3election.proto"], ["proto"])?;
    let encoded = descriptors.encode_to_vec();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    if std::env::var_os("CARGO_FEATURE_JSON").is_some() {
        // etcd's gateway marshals with the .proto's own field names
        // (grpc-gateway's OrigName) and leaves default values out.
        pbjson_build::Builder::new()
            .register_descriptors(&encoded)?
            .preserve_proto_field_names()
            .ignore_unknown_fields()
            .build(&[
                ".mvccpb",
                ".authpb",
                ".etcdserverpb",
                ".v3lockpb",
                ".v3electionpb",
            ])?;
    }
    Ok(())
}
