//! The control-line parser on arbitrary bytes: never panics, and every
//! reply it leads to is exactly one line of JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wspush::control::{error, parse};

fuzz_target!(|data: &[u8]| {
    let (id, request) = parse(data);
    if let Err(message) = request {
        let line = error(id, &message);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(serde_json::from_slice::<serde_json::Value>(&line).is_ok());
    }
});
