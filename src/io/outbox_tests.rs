//! Unit tests of `outbox.rs`, on byte slices.
use super::*;

/// A sink that takes at most `room` bytes, then says WouldBlock.
struct Throttled {
    room: usize,
    got: Vec<u8>,
    calls: usize,
}

impl Throttled {
    fn new(room: usize) -> Self {
        Throttled {
            room,
            got: vec![],
            calls: 0,
        }
    }
}

impl Write for Throttled {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.room);
            self.got.extend_from_slice(&b[..take]);
            self.room -= take;
            n += take;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn frame(bytes: &[u8]) -> Rc<[u8]> {
    Rc::from(bytes)
}

#[test]
fn a_turn_leaves_in_one_writev_and_allocates_no_backlog() {
    let mut turn = Turn::default();
    let (mut a, mut b) = (Chain::default(), Chain::default());
    for text in [b"one".as_slice(), b"two", b"three"] {
        let f = turn.add(frame(text), 0);
        turn.enqueue(0, &mut a, f);
        turn.enqueue(1, &mut b, f);
    }
    assert_eq!(turn.take_dirty(), vec![0, 1]);
    let mut sink = Throttled::new(100);
    let mut backlog = None;
    assert_eq!(
        turn.write_chain(&mut a, &mut backlog, &mut sink).unwrap(),
        0
    );
    assert_eq!(sink.got, b"onetwothree");
    assert_eq!(sink.calls, 1);
    assert!(backlog.is_none());
    assert!(a.is_empty());
}

#[test]
fn a_short_write_keeps_the_rest_in_order_and_frees_it_when_drained() {
    let mut turn = Turn::default();
    let mut chain = Chain::default();
    for text in [b"abc".as_slice(), b"defg", b"hi"] {
        let f = turn.add(frame(text), 0);
        turn.enqueue(7, &mut chain, f);
    }
    let mut sink = Throttled::new(5);
    let mut backlog = None;
    assert_eq!(
        turn.write_chain(&mut chain, &mut backlog, &mut sink)
            .unwrap(),
        4
    );
    assert_eq!(backlog.as_ref().unwrap().bytes(), 4);
    sink.room = 1;
    assert_eq!(write_backlog(&mut backlog, &mut sink).unwrap(), 3);
    sink.room = 100;
    assert_eq!(write_backlog(&mut backlog, &mut sink).unwrap(), 0);
    assert!(backlog.is_none());
    assert_eq!(sink.got, b"abcdefghi");
}

#[test]
fn a_lone_frame_cut_short_keeps_its_tail() {
    let mut turn = Turn::default();
    let mut chain = Chain::default();
    let f = turn.add(frame(b"lonely"), 0);
    turn.enqueue(3, &mut chain, f);
    let mut sink = Throttled::new(2);
    let mut backlog = None;
    assert_eq!(
        turn.write_chain(&mut chain, &mut backlog, &mut sink)
            .unwrap(),
        4
    );
    sink.room = 100;
    assert_eq!(write_backlog(&mut backlog, &mut sink).unwrap(), 0);
    assert_eq!(sink.got, b"lonely");
    assert_eq!(sink.calls, 2);
}

#[test]
fn frames_of_a_later_turn_queue_behind_the_backlog() {
    let mut turn = Turn::default();
    let mut chain = Chain::default();
    let f = turn.add(frame(b"first"), 0);
    turn.enqueue(0, &mut chain, f);
    let mut sink = Throttled::new(2);
    let mut backlog = None;
    turn.write_chain(&mut chain, &mut backlog, &mut sink)
        .unwrap();
    let dirty = turn.take_dirty();
    turn.clear(dirty);
    let f = turn.add(frame(b"second"), 0);
    turn.enqueue(0, &mut chain, f);
    sink.room = 100;
    assert_eq!(
        turn.write_chain(&mut chain, &mut backlog, &mut sink)
            .unwrap(),
        0
    );
    assert_eq!(sink.got, b"firstsecond");
}

#[test]
fn a_keyed_frame_replaces_the_unsent_one_with_the_same_key() {
    let mut turn = Turn::default();
    let mut chain = Chain::default();
    let temp = key_of("temp");
    for (text, key) in [
        (b"t1".as_slice(), temp),
        (b"x", 0),
        (b"t2", temp),
        (b"t3", temp),
    ] {
        let f = turn.add(frame(text), key);
        turn.enqueue(0, &mut chain, f);
    }
    let mut sink = Throttled::new(3);
    let mut backlog = None;
    turn.write_chain(&mut chain, &mut backlog, &mut sink)
        .unwrap();
    assert_eq!(sink.got, b"xt3");
    // In the backlog too, but never the half-written front frame.
    let queue = backlog.get_or_insert_with(Backlog::default);
    queue.push_keyed(frame(b"t4"), temp);
    queue.offset = 1;
    queue.push_keyed(frame(b"t5"), temp);
    assert!(queue.drop_key(temp));
    assert_eq!(queue.chunks.len(), 1);
    assert!(!queue.drop_key(temp));
}

#[test]
fn truncating_keeps_only_the_half_written_frame() {
    let mut backlog = Backlog::default();
    backlog.push(frame(b"12345"));
    backlog.push(frame(b"678"));
    backlog.offset = 2;
    backlog.bytes -= 2;
    backlog.truncate_to_partial();
    assert_eq!(backlog.bytes(), 3);
    assert_eq!(backlog.chunks.len(), 1);
    let mut fresh = Backlog::default();
    fresh.push(frame(b"abc"));
    fresh.truncate_to_partial();
    assert_eq!(fresh.bytes(), 0);
}
