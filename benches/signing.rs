//! Standard Webhooks signing: `sign` (every delivery attempt) and `verify` (inbound pushes) of a
//! 1 KB body. `cargo bench --bench signing` (see docs/BENCHMARKS.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hookyard::delivery::signing::{sign, verify};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MSG_ID: &str = "msg_0190f6a1b2c37d4e8f9a0b1c2d3e4f50";
const TIMESTAMP: i64 = 1_714_549_512;

/// A 1 KB JSON body (the size of a typical user event envelope).
fn body_1kb() -> Vec<u8> {
    let mut body =
        br#"{"type":"user.modified","timestamp":"2024-05-01T07:45:12Z","data":{"note":""#.to_vec();
    let tail = br#""}}"#;
    while body.len() + tail.len() < 1024 {
        body.push(b'x');
    }
    body.extend_from_slice(tail);
    body
}

fn bench(c: &mut Criterion) {
    let body = body_1kb();
    assert_eq!(body.len(), 1024);
    let signature = sign(SECRET, MSG_ID, TIMESTAMP, &body).expect("the secret is valid");
    let timestamp = TIMESTAMP.to_string();
    verify(
        SECRET, MSG_ID, &timestamp, &signature, &body, TIMESTAMP, 300,
    )
    .expect("the signature verifies");

    let mut group = c.benchmark_group("signing");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("sign_1kb", |b| {
        b.iter(|| {
            sign(
                black_box(SECRET),
                black_box(MSG_ID),
                black_box(TIMESTAMP),
                black_box(&body),
            )
        })
    });
    group.bench_function("verify_1kb", |b| {
        b.iter(|| {
            verify(
                black_box(SECRET),
                black_box(MSG_ID),
                black_box(&timestamp),
                black_box(&signature),
                black_box(&body),
                black_box(TIMESTAMP),
                300,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
