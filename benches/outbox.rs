//! The outbox's vectored write path: frames queued for one connection in a
//! turn leave in `writev` calls of up to 64 slices; and the slow path, where
//! a short write moves the rest into the connection's backlog.

use std::io::{self, IoSlice, Write};
use std::rc::Rc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wspush::outbox::{self, Chain, Turn};

/// Takes at most `room` bytes per call (`usize::MAX`: everything).
struct Sink {
    room: usize,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|b| b.len()).sum::<usize>().min(self.room))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_path(c: &mut Criterion) {
    let frame: Rc<[u8]> = Rc::from(vec![b'x'; 120]);
    let mut group = c.benchmark_group("outbox/write_chain");
    for frames in [1, 10, 100] {
        let mut turn = Turn::default();
        group.throughput(Throughput::Elements(frames));
        group.bench_function(BenchmarkId::from_parameter(frames), |b| {
            b.iter(|| {
                let mut chain = Chain::default();
                let mut backlog = None;
                for _ in 0..frames {
                    let f = turn.add(frame.clone(), 0);
                    turn.enqueue(0, &mut chain, f);
                }
                let n = turn
                    .write_chain(&mut chain, &mut backlog, &mut Sink { room: usize::MAX })
                    .expect("in memory");
                let dirty = turn.take_dirty();
                turn.clear(dirty);
                n
            })
        });
    }
    group.finish();
    c.bench_function("outbox/short_write_then_drain_100", |b| {
        let mut turn = Turn::default();
        b.iter(|| {
            let mut chain = Chain::default();
            let mut backlog = None;
            for _ in 0..100 {
                let f = turn.add(frame.clone(), 0);
                turn.enqueue(0, &mut chain, f);
            }
            let mut sink = Sink { room: 1000 };
            turn.write_chain(&mut chain, &mut backlog, &mut sink)
                .expect("in memory");
            let dirty = turn.take_dirty();
            turn.clear(dirty);
            sink.room = usize::MAX;
            outbox::write_backlog(&mut backlog, &mut sink).expect("in memory")
        })
    });
}

criterion_group!(benches, write_path);
criterion_main!(benches);
