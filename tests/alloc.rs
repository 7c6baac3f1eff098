//! DESIGN.md §7: fanning one push out allocates O(1), not O(N). Counted
//! (not timed) through the server's outbox path on in-memory connections.

#[path = "../benches/support/fanout.rs"]
mod support;
use support::{Fanout, allocations};

/// Allocations for one push (and for a turn of 10 pushes) once the turn's
/// loop-wide vectors have grown to size.
fn allocations_per_turn(n: usize, pushes: usize) -> u64 {
    let mut f = Fanout::new(n);
    f.turn(pushes);
    let before = allocations();
    let written = f.turn(pushes);
    let used = allocations() - before;
    assert!(
        f.conns.iter().all(|c| c.sink.calls == 2),
        "one writev per turn"
    );
    assert!(written > 0);
    used
}

#[test]
fn one_push_allocates_the_same_for_100_and_10_000_connections() {
    let small = allocations_per_turn(100, 1);
    let large = allocations_per_turn(10_000, 1);
    assert_eq!(small, large, "allocations per push grew with N");
    assert!(large <= 8, "{large} allocations for one push");
    let burst = allocations_per_turn(10_000, 10);
    assert_eq!(burst, 10 * large, "a turn of 10 pushes costs 10 pushes");
}
