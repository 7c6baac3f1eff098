//! The inbound frame path (`conn::feed`) on arbitrary bytes delivered in two
//! reads: never panics, never holds more than the message limit plus one
//! frame header, and a split never changes what is delivered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wspush::io::conn::{Event, Verdict, feed};

const MAX: usize = 1024;

fn run(data: &[u8], cut: usize) -> (Verdict, Vec<String>) {
    let mut input = None;
    let mut seen = Vec::new();
    let mut verdict = Verdict::Continue;
    for part in [&data[..cut], &data[cut..]] {
        let mut bytes = part.to_vec();
        verdict = feed(&mut input, &mut bytes, MAX, |e| {
            let stop = matches!(e, Event::Close(_));
            seen.push(format!("{e:?}"));
            if stop { Verdict::Stop } else { Verdict::Continue }
        });
        if verdict != Verdict::Continue {
            break;
        }
    }
    (verdict, seen)
}

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |&b| usize::from(b)) % (data.len() + 1);
    let whole = run(data, data.len());
    let split = run(data, cut);
    assert_eq!(whole, split, "split at {cut} changed the outcome");
});
