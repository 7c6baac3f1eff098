//! The timer wheel at 100,000 entries (one per connection): re-arming an
//! entry (cancel + insert, what every connection's timer change costs),
//! and a sweep that fires one tick's share of them.

use criterion::{Criterion, criterion_group, criterion_main};
use wspush::wheel::{TimerId, Wheel};

const ENTRIES: u64 = 100_000;
const TICK_MS: u64 = 1000;

/// 100,000 entries spread over 600 s, like idle deadlines.
fn full_wheel() -> (Wheel<u64>, Vec<TimerId>) {
    let mut wheel = Wheel::new(TICK_MS, 1024);
    let ids = (0..ENTRIES)
        .map(|i| wheel.insert(1 + (i * 7919) % 600_000, i))
        .collect();
    (wheel, ids)
}

fn wheel(c: &mut Criterion) {
    c.bench_function("wheel/rearm_at_100k", |b| {
        let (mut wheel, mut ids) = full_wheel();
        let mut i = 0usize;
        b.iter(|| {
            let slot = i % ids.len();
            wheel.cancel(ids[slot]);
            ids[slot] = wheel.insert(1 + (i as u64 * 104_729) % 600_000, i as u64);
            i += 1;
        })
    });
    c.bench_function("wheel/insert_100k_and_expire_all", |b| {
        b.iter(|| {
            let (mut wheel, _) = full_wheel();
            let mut fired = 0u64;
            let mut now = 0;
            while now <= 600_000 {
                while wheel.expire(now).is_some() {
                    fired += 1;
                }
                now += TICK_MS;
            }
            assert_eq!(fired, ENTRIES);
            fired
        })
    });
    c.bench_function("wheel/next_timeout_at_100k", |b| {
        let (wheel, _) = full_wheel();
        b.iter(|| wheel.next_timeout(0))
    });
}

criterion_group!(benches, wheel);
criterion_main!(benches);
