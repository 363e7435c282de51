//! etcd's v3 gRPC API as Rust types, clients and server traits: the
//! services keel serves to etcd's clients (etcdctl, Go's clientv3, the
//! Rust `etcd-client` crate, the JSON gateway's users).
//!
//! The definitions in `proto/` were written for keel from etcd's published
//! interface (package, service, method, message and field names, numbers
//! and types: what the wire needs); `build.rs` compiles them with protox,
//! so no `protoc` is needed. Each etcd package is a module here, as the
//! generated code refers to its siblings by package name.

/// etcd's `mvccpb` package: keys, values and watch events.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's `authpb` package: users, roles and permissions.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod authpb {
    tonic::include_proto!("authpb");
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's `etcdserverpb` package: KV, Watch, Lease, Cluster, Maintenance
/// and Auth, and their messages.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's `v3lockpb` package: the Lock service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's `v3electionpb` package: the Election service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}
