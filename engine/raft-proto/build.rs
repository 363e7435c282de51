//! Generates `eraftpb.rs` from `proto/eraftpb.proto` with rust-protobuf's
//! pure-Rust parser, so that building keel never runs `protoc` (upstream
//! raft-proto runs protoc, and fails if `$PROTOC` names a missing program).
//!
//! The generated code is the same rust-protobuf 2.28 code that upstream
//! generates (only the embedded descriptor differs: no source comments),
//! with the one change upstream's protobuf-build makes too: a message whose
//! enum field holds an unknown number is refused instead of read as the
//! enum's default.
//! For raft messages from a peer, the default of `MessageType` is `MsgHup`
//! (start an election), so garbage must be an error, never a default.

use std::path::{Path, PathBuf};

const PROTO: &str = "proto/eraftpb.proto";
const LENIENT_ENUM_READ: &str = "::protobuf::rt::read_proto3_enum_with_unknown_fields_into(";

fn main() {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("protos");
    if out_dir.exists() {
        std::fs::remove_dir_all(&out_dir).expect("clear the generated-code directory");
    }
    std::fs::create_dir_all(&out_dir).expect("create the generated-code directory");

    protobuf_codegen_pure::Codegen::new()
        .out_dir(&out_dir)
        .include("proto")
        .input(PROTO)
        .run()
        .expect("generate Rust code from proto/eraftpb.proto");

    let generated = out_dir.join("eraftpb.rs");
    let code = std::fs::read_to_string(&generated).expect("read the generated eraftpb.rs");
    let strict = refuse_unknown_enum_numbers(&code);
    std::fs::write(&generated, strict).expect("write eraftpb.rs");
    write_module_file(&out_dir);
}

/// Replaces every lenient enum read, which stores an unknown number among the
/// unknown fields and leaves the field at its default, with a strict
/// `read_enum`, which fails the decode.
fn refuse_unknown_enum_numbers(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    let mut replaced = 0;
    while let Some(start) = rest.find(LENIENT_ENUM_READ) {
        out.push_str(&rest[..start]);
        let after_call = &rest[start + LENIENT_ENUM_READ.len()..];
        let end = after_call
            .find(")?")
            .expect("a lenient enum read ends with `)?`");
        // The arguments are: wire type, input stream, `&mut self.<field>`,
        // field number, unknown fields.
        let args: Vec<&str> = after_call[..end].split(',').map(str::trim).collect();
        let [wire_type, input, field, _number, _unknown] = args[..] else {
            panic!("unexpected lenient enum read arguments: {args:?}");
        };
        let field = field
            .strip_prefix("&mut ")
            .expect("the field is passed as `&mut`");
        out.push_str(&format!(
            "if {wire_type} == ::protobuf::wire_format::WireTypeVarint {{ \
             {field} = {input}.read_enum()?; \
             }} else {{ \
             return ::std::result::Result::Err(::protobuf::rt::unexpected_wire_type({wire_type})); \
             }}"
        ));
        rest = &after_call[end + 2..];
        replaced += 1;
    }
    out.push_str(rest);
    // eraftpb has five enum fields: Entry.entry_type, Message.msg_type,
    // ConfChange.change_type, ConfChangeSingle.change_type and
    // ConfChangeV2.transition. A different count means the generator changed.
    assert_eq!(replaced, 5, "expected five enum fields in eraftpb.proto");
    out
}

fn write_module_file(out_dir: &Path) {
    std::fs::write(out_dir.join("mod.rs"), "pub mod eraftpb;\n").expect("write mod.rs");
}
