//! Encoding server frames: a typical push, a 4 KiB and a 64 KiB payload.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use wspush::frame::{self, OpCode};

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/encode");
    for size in [96, 4096, 65536] {
        let payload = vec![b'x'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, p| {
            b.iter(|| frame::encode(OpCode::Text, black_box(p)))
        });
    }
    group.finish();
    c.bench_function("frame/close", |b| {
        b.iter(|| frame::encode_close(black_box(4001), black_box("idle timeout")))
    });
}

criterion_group!(benches, encode);
criterion_main!(benches);
