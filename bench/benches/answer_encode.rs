//! Encoding a range answer into its frame, as a connection does before it
//! queues the answer: small answers, and a 7 MiB one (seven 1 MiB values).
//! A large encode runs on the core without a pause, so its time is time
//! every other request on that core waits.
//!
//! `cargo bench -p keel-bench --bench answer_encode`. Criterion reports
//! bytes of answer per second.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keel_proto::{encode_response_frame_within, KeyValue, RangeResponse, Response, ResponseBody};

fn answer(pairs: usize, value_len: usize) -> Response {
    let kvs = (0..pairs)
        .map(|i| KeyValue {
            key: format!("{{big}}/{i:06}").into_bytes(),
            create_revision: 10 + i as u64,
            mod_revision: 20 + i as u64,
            version: 1,
            value: vec![b'v'; value_len],
            ..KeyValue::default()
        })
        .collect();
    Response {
        id: 7,
        revision: 99,
        body: ResponseBody::Range(RangeResponse {
            kvs,
            more: false,
            count: pairs as u64,
        }),
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_range_answer");
    for (name, pairs, value_len) in [
        ("10_pairs_of_100_B", 10, 100),
        ("100_pairs_of_1_KiB", 100, 1 << 10),
        ("7_pairs_of_1_MiB", 7, 1 << 20),
    ] {
        let response = answer(pairs, value_len);
        group.throughput(Throughput::Bytes((pairs * value_len) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &response, |b, r| {
            b.iter(|| encode_response_frame_within(r, 64 << 20).expect("fits"))
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
