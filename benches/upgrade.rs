//! The HTTP upgrade: parsing a browser-like request head, and the
//! `Sec-WebSocket-Accept` key (SHA-1 + base64).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use wspush::handshake::{self, Outcome, Rules};

const REQUEST: &[u8] = b"GET /push/s3cret-token-0123456789?device=phone HTTP/1.1\r\n\
Host: 127.0.0.1:7001\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\
Origin: http://127.0.0.1:7001\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\r\n";

fn upgrade(c: &mut Criterion) {
    let rules = Rules {
        ws_path: "/push",
        allowed_origins: &[],
        max_head: 8192,
        api_key: None,
        demo: false,
    };
    assert!(matches!(
        handshake::examine(REQUEST, &rules),
        Outcome::Upgrade { .. }
    ));
    c.bench_function("upgrade/examine", |b| {
        b.iter(|| handshake::examine(black_box(REQUEST), &rules))
    });
    c.bench_function("upgrade/accept_key", |b| {
        b.iter(|| handshake::accept_key(black_box("dGhlIHNhbXBsZSBub25jZQ==")))
    });
    c.bench_function("upgrade/switching_protocols", |b| {
        b.iter(|| handshake::switching_protocols(black_box("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")))
    });
}

criterion_group!(benches, upgrade);
criterion_main!(benches);
