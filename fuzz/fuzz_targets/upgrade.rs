//! The HTTP upgrade parser on arbitrary bytes, whole and split in two: it
//! must never panic, and feeding a prefix first must not change the answer
//! for the whole head (the server re-examines the accumulated bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wspush::handshake::{Outcome, Rules, examine};

fuzz_target!(|data: &[u8]| {
    let origins = ["http://ok.example".to_string()];
    let rules = Rules {
        ws_path: "/push",
        allowed_origins: &origins,
        max_head: 8 * 1024,
        api_key: None,
        demo: false,
    };
    let whole = examine(data, &rules);
    // Any prefix is either still partial or already decided; once decided,
    // more bytes never turn a rejection into an upgrade.
    let cut = data.first().map_or(0, |&b| usize::from(b)) % (data.len() + 1);
    if let Outcome::Reject(_) = examine(&data[..cut], &rules) {
        assert!(
            matches!(whole, Outcome::Reject(_)),
            "a rejected prefix became {whole:?}"
        );
    }
    if let Outcome::Upgrade { consumed, .. } = whole {
        assert!(consumed <= data.len());
    }
});
