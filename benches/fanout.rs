//! One push fanned out to 10,000 in-memory connections, and 100 pushes in
//! one turn, through the hub's own delivery and the server's outbox path;
//! prints the allocations per push (O(1), not O(N)) before timing.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

#[path = "support/fanout.rs"]
mod support;
use support::{Fanout, Target, allocations};

fn fanout(c: &mut Criterion) {
    for target in [Target::Everyone, Target::Topic, Target::Users] {
        for n in [100, 1_000, 10_000] {
            let mut f = Fanout::new(n, target);
            f.turn(1); // warm: the turn's vectors reach their steady capacity
            let before = allocations();
            f.turn(1);
            println!(
                "one push ({target:?}) to {n} connections: {} allocations ({} of them parsing the request)",
                allocations() - before,
                f.parse_allocations()
            );
        }
    }
    let mut group = c.benchmark_group("fanout");
    for (n, pushes) in [(10_000, 1), (10_000, 100)] {
        let mut f = Fanout::new(n, Target::Everyone);
        f.turn(pushes);
        group.throughput(Throughput::Elements((n * pushes) as u64));
        group.bench_function(BenchmarkId::new(format!("{pushes}_pushes"), n), |b| {
            b.iter(|| f.turn(pushes))
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
