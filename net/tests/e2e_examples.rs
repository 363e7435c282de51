//! Each example of the client crate, run against a server this test
//! starts: their code is included here as it is.

mod support;

#[path = "../client/examples/distributed_lock.rs"]
#[allow(dead_code)]
mod distributed_lock;
#[path = "../client/examples/leader_election.rs"]
#[allow(dead_code)]
mod leader_election;
#[path = "../client/examples/lease_cache.rs"]
#[allow(dead_code)]
mod lease_cache;
#[path = "../client/examples/service_discovery.rs"]
#[allow(dead_code)]
mod service_discovery;
#[path = "../client/examples/service_registration.rs"]
#[allow(dead_code)]
mod service_registration;

use support::{block_on, runtime, Server};

#[test]
fn every_example_runs_against_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 4, &[]);
    let endpoint = server.endpoint();
    let rt = runtime();
    assert!(block_on(&rt, service_registration::run(&endpoint)).unwrap());
    let instances = block_on(&rt, service_discovery::run(&endpoint)).unwrap();
    assert_eq!(instances.keys().collect::<Vec<_>>(), ["services/api/b"]);
    let leaders = block_on(&rt, leader_election::run(&endpoint)).unwrap();
    assert_eq!(leaders, ["node-a", "node-b"]);
    assert_eq!(block_on(&rt, distributed_lock::run(&endpoint)).unwrap(), 20);
    assert!(block_on(&rt, lease_cache::run(&endpoint))
        .unwrap()
        .is_empty());
}
