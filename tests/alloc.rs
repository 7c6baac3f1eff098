//! docs/protocol.md, "Bounds and budgets": fanning one push out allocates
//! O(1), not O(N), for a broadcast, a topic publish and a push naming every
//! user. Counted (not timed) through the hub's own delivery into in-memory
//! connections on the server's outbox path.

#[path = "../benches/support/fanout.rs"]
mod support;
use support::{Fanout, Target, allocations};

/// Allocations for a turn of `pushes` pushes to `target` over `n`
/// connections, once the turn's loop-wide vectors have grown to size,
/// without those of parsing the request line itself.
fn allocations_per_turn(n: usize, target: Target, pushes: usize) -> u64 {
    let mut f = Fanout::new(n, target);
    f.turn(pushes);
    let before = allocations();
    let written = f.turn(pushes);
    let used = allocations() - before;
    assert!(
        f.mem.conns.iter().all(|c| c.sink.calls == 2),
        "one writev per turn"
    );
    assert!(written > 0);
    used - pushes as u64 * f.parse_allocations()
}

#[test]
fn one_push_allocates_the_same_for_100_and_10_000_connections() {
    for target in [Target::Everyone, Target::Topic, Target::Users] {
        let small = allocations_per_turn(100, target, 1);
        let large = allocations_per_turn(10_000, target, 1);
        println!("{target:?}: {small} allocations for 100, {large} for 10,000");
        assert_eq!(small, large, "{target:?}: allocations per push grew with N");
        assert!(large <= 16, "{target:?}: {large} allocations for one push");
    }
    let one = allocations_per_turn(1_000, Target::Everyone, 1);
    let burst = allocations_per_turn(1_000, Target::Everyone, 10);
    assert_eq!(burst, 10 * one, "a turn of 10 pushes costs 10 pushes");
}
