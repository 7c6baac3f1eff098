//! Unit tests of `addr.rs`.
use super::*;
use crate::redis::resp::{Reply, parse as parse_reply};

fn tcp(host: &str, port: u16) -> Target {
    Target::Tcp {
        host: host.to_owned(),
        port,
    }
}

fn addr(target: Target, user: Option<&str>, password: Option<&str>, db: u32) -> RedisAddr {
    RedisAddr {
        target,
        password: password.map(str::to_owned),
        username: user.map(str::to_owned),
        db,
    }
}

/// The error for `url`, which must be refused.
fn refused(url: &str) -> String {
    parse(url).expect_err(url)
}

#[test]
fn tcp_forms() {
    let cases = [
        (
            "redis://localhost",
            addr(tcp("localhost", 6379), None, None, 0),
        ),
        (
            "redis://localhost/",
            addr(tcp("localhost", 6379), None, None, 0),
        ),
        (
            "redis://10.0.0.5:6380",
            addr(tcp("10.0.0.5", 6380), None, None, 0),
        ),
        (
            "REDIS://cache.local:1/0",
            addr(tcp("cache.local", 1), None, None, 0),
        ),
        (
            "redis://:s3cret@h:7000/5",
            addr(tcp("h", 7000), None, Some("s3cret"), 5),
        ),
        (
            "redis://alice:pw@redis-1/2",
            addr(tcp("redis-1", 6379), Some("alice"), Some("pw"), 2),
        ),
        ("redis://[::1]:6380", addr(tcp("::1", 6380), None, None, 0)),
        (
            "redis://[fe80::1]",
            addr(tcp("fe80::1", 6379), None, None, 0),
        ),
        ("redis://@h", addr(tcp("h", 6379), None, None, 0)),
        (
            "redis://h/4294967295",
            addr(tcp("h", 6379), None, None, u32::MAX),
        ),
        ("redis://h/16", addr(tcp("h", 6379), None, None, 16)),
    ];
    for (url, want) in cases {
        assert_eq!(parse(url), Ok(want), "{url}");
    }
}

#[test]
fn credentials_are_percent_decoded() {
    let a = parse("redis://us%3Aer:p%40ss%2Fw%25rd+@h").unwrap();
    assert_eq!(a.username.as_deref(), Some("us:er"));
    assert_eq!(a.password.as_deref(), Some("p@ss/w%rd+"));
    // Raw `@`, `:` and `/` in a password: the last `@` ends it.
    let a = parse("redis://:a@b:c/d@h:1/3").unwrap();
    assert_eq!(a, addr(tcp("h", 1), None, Some("a@b:c/d"), 3));
    let a = parse("redis://:%C3%A9t%C3%A9@h").unwrap();
    assert_eq!(a.password.as_deref(), Some("été"));
}

#[test]
fn unix_forms() {
    let sock = || Target::Unix(PathBuf::from("/run/redis.sock"));
    let cases = [
        ("unix:///run/redis.sock", addr(sock(), None, None, 0)),
        ("unix:/run/redis.sock", addr(sock(), None, None, 0)),
        ("redis+unix:///run/redis.sock", addr(sock(), None, None, 0)),
        ("redis+unix:/run/redis.sock?", addr(sock(), None, None, 0)),
        ("unix:///run/redis.sock?db=3", addr(sock(), None, None, 3)),
        (
            "unix:///run/redis.sock?db=3&password=secret",
            addr(sock(), None, Some("secret"), 3),
        ),
        (
            "unix:///run/redis.sock?pass=a%26b&",
            addr(sock(), None, Some("a&b"), 0),
        ),
        (
            "unix:///run/redis.sock?user=bob&password=x",
            addr(sock(), Some("bob"), Some("x"), 0),
        ),
        (
            "unix:///run/redis.sock?username=bob&pass=x&db=0",
            addr(sock(), Some("bob"), Some("x"), 0),
        ),
        (
            "unix:///run/redis.sock?user=&password=x",
            addr(sock(), None, Some("x"), 0),
        ),
    ];
    for (url, want) in cases {
        assert_eq!(parse(url), Ok(want), "{url}");
    }
    let spaced = parse("unix:///tmp/my%20redis.sock").unwrap();
    assert_eq!(
        spaced.target,
        Target::Unix(PathBuf::from("/tmp/my redis.sock"))
    );
}

#[test]
fn refused_schemes() {
    assert!(refused("rediss://h:6380").contains("TLS is not supported; put a TLS tunnel in front"));
    assert!(refused("http://h").starts_with("unknown scheme http:"));
    assert!(refused("tcp://h:6379").starts_with("unknown scheme tcp:"));
    for url in [
        "",
        "localhost",
        "redis:h",
        "redis:/h",
        "//h:6379",
        "[::1]:6379",
    ] {
        assert!(refused(url).starts_with("expected redis://"), "{url}");
    }
    assert!(refused("localhost:6379").contains("expected redis://"));
}

#[test]
fn refused_hosts_and_ports() {
    let cases = [
        ("redis://", "empty host"),
        ("redis:///2", "empty host"),
        ("redis://:6379", "empty host"),
        ("redis://:pw@", "empty host"),
        ("redis://h:", "bad port"),
        ("redis://h:0", "bad port"),
        ("redis://h:65536", "bad port"),
        ("redis://h:+80", "bad port"),
        ("redis://h:http", "bad port"),
        ("redis://[::1]:", "bad port"),
        ("redis://::1:6379", "IPv6 addresses go in brackets"),
        ("redis://[::1", "unclosed ["),
        ("redis://[::1]6379", "expected :port after ]"),
        ("redis://[localhost]", "is not an IPv6 address"),
        ("redis://[]", "is not an IPv6 address"),
        ("redis://ho st", "bad host name"),
        ("redis://h%41", "bad host name"),
    ];
    for (url, want) in cases {
        assert!(refused(url).contains(want), "{url}: {}", refused(url));
    }
}

#[test]
fn refused_paths_and_dbs() {
    let cases = [
        ("redis://h/x", "the path must be /<db number>, not /x"),
        ("redis://h/1/2", "the path must be /<db number>"),
        ("redis://h//", "the path must be /<db number>"),
        ("redis://h/-1", "the path must be /<db number>"),
        ("redis://h/4294967296", "bad db \"4294967296\""),
        ("redis://h#x", "the path must be /<db number>"),
        ("redis://h?db=2", "take no query parameters"),
        ("redis://h/2?password=x", "take no query parameters"),
        (
            "unix:///s?db=x",
            "bad db \"x\": expected a number from 0 to 4294967295",
        ),
        ("unix:///s?db=", "bad db"),
        ("unix:///s?db=+1", "bad db"),
        ("unix:///s?db=1&db=2", "query parameter db given twice"),
    ];
    for (url, want) in cases {
        assert!(refused(url).contains(want), "{url}: {}", refused(url));
    }
}

#[test]
fn refused_credentials() {
    let cases = [
        ("redis://alice@h", "a user name needs a password"),
        ("redis://alice:@h", "empty password"),
        ("redis://:@h", "empty password"),
        ("redis://:p%4@h", "bad percent-encoding in the password"),
        ("redis://:p%zz@h", "bad percent-encoding in the password"),
        ("redis://u%:pw@h:1", "bad percent-encoding in the user name"),
        ("redis://:%FF@h", "the password is not UTF-8"),
        ("unix:///s?password=", "empty password"),
        ("unix:///s?user=bob", "a user name needs a password"),
        (
            "unix:///s?password=a&pass=b",
            "query parameter pass given twice",
        ),
        ("unix:///s?user=a&username=b&password=c", "given twice"),
        (
            "unix:///s?password=%",
            "bad percent-encoding in the password",
        ),
    ];
    for (url, want) in cases {
        let error = refused(url);
        assert!(error.contains(want), "{url}: {error}");
        assert!(!error.contains(url), "{url}: the error repeats the URL");
    }
}

#[test]
fn refused_unix_forms() {
    let cases = [
        ("unix://", "empty unix socket path"),
        ("unix:", "empty unix socket path"),
        ("unix:///", "empty unix socket path"),
        ("unix:///?db=1", "empty unix socket path"),
        ("redis+unix://", "empty unix socket path"),
        ("unix://run/redis.sock", "must be absolute"),
        ("unix:run/redis.sock", "must be absolute"),
        ("unix://:pw@/run/redis.sock", "credentials go in the query"),
        (
            "unix:///s?timeout=5",
            "unknown query parameter timeout (known: db, password, user)",
        ),
        ("unix:///s?db", "query parameter db needs a value"),
        ("unix:///s%zz", "bad percent-encoding in the socket path"),
    ];
    for (url, want) in cases {
        assert!(refused(url).contains(want), "{url}: {}", refused(url));
    }
}

#[test]
fn display_hides_the_password() {
    let cases = [
        ("redis://h", "redis://h:6379/0"),
        ("redis://:hunter2@h:7000/5", "redis://:***@h:7000/5"),
        ("redis://alice:hunter2@h/2", "redis://alice:***@h:6379/2"),
        ("redis://[::1]:6380/1", "redis://[::1]:6380/1"),
        ("redis://:hunter2@[::1]", "redis://:***@[::1]:6379/0"),
        ("unix:/run/redis.sock", "unix:///run/redis.sock"),
        ("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3"),
        (
            "unix:///run/redis.sock?password=hunter2&db=3",
            "unix:///run/redis.sock?db=3&password=***",
        ),
        (
            "unix:///r.sock?user=bob&pass=hunter2",
            "unix:///r.sock?user=bob&password=***",
        ),
    ];
    for (url, want) in cases {
        let a = parse(url).unwrap();
        assert_eq!(a.to_string(), want, "{url}");
        let debug = format!("{a:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(debug.contains("\"***\""), a.password.is_some(), "{debug}");
    }
    // A username without a password (built by hand) is not shown either way.
    let a = addr(tcp("h", 1), Some("bob"), None, 0);
    assert_eq!(a.to_string(), "redis://h:1/0");
}

/// The commands `connect_commands` appends, as arrays of strings.
fn sent(a: &RedisAddr) -> Vec<Vec<String>> {
    let mut out = vec![];
    a.connect_commands(&mut out);
    let mut commands = vec![];
    let mut pos = 0;
    while let Some((reply, n)) = parse_reply(&out[pos..]).unwrap() {
        let args = reply.as_array().unwrap().iter();
        let args = args.map(|a| String::from_utf8(a.as_bytes().unwrap().to_vec()).unwrap());
        commands.push(args.collect());
        pos += n;
    }
    assert_eq!(pos, out.len());
    commands
}

#[test]
fn connect_commands_auth_then_select() {
    let none = parse("redis://h").unwrap();
    assert_eq!(sent(&none), Vec::<Vec<String>>::new());
    assert_eq!(none.connect_reply_count(), 0);

    let auth = parse("redis://:p%40ss@h").unwrap();
    assert_eq!(sent(&auth), [["AUTH", "p@ss"]]);
    assert_eq!(auth.connect_reply_count(), 1);

    let acl = parse("redis://alice:pw@h/12").unwrap();
    assert_eq!(
        sent(&acl),
        [vec!["AUTH", "alice", "pw"], vec!["SELECT", "12"]]
    );
    assert_eq!(acl.connect_reply_count(), 2);

    let select = parse("unix:///s?db=4294967295").unwrap();
    assert_eq!(sent(&select), [["SELECT", "4294967295"]]);
    assert_eq!(select.connect_reply_count(), 1);

    // A username set without a password is not sent (AUTH needs one).
    let user_only = addr(tcp("h", 1), Some("bob"), None, 0);
    assert_eq!(sent(&user_only), Vec::<Vec<String>>::new());
    assert_eq!(user_only.connect_reply_count(), 0);

    let mut out = vec![];
    acl.connect_commands(&mut out);
    assert_eq!(
        out,
        b"*3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$2\r\npw\r\n*2\r\n$6\r\nSELECT\r\n$2\r\n12\r\n"
    );
    assert!(matches!(
        parse_reply(b"+OK\r\n"),
        Ok(Some((Reply::Simple(b"OK"), 5)))
    ));
}
