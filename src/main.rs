//! The `wspush` binary: parse the command line, set up logging, run.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use wspush::cli::{Cli, Command};

fn main() {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => wspush::serve(*args),
        other => wspush::client::run(other),
    };
    if let Err(message) = result {
        eprintln!("wspush: {message}");
        std::process::exit(1);
    }
}

/// Log lines on stderr: `[2026-11-22T02:41:07.123Z INFO  wspush::server] ...`,
/// filtered by `RUST_LOG` (default `info`). env_logger is built without its
/// regex and date-time features (they were a third of the binary); the UTC
/// timestamp is formatted here instead.
fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            writeln!(
                buf,
                "[{} {:<5} {}] {}",
                utc(now.as_secs(), now.subsec_millis()),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
}

/// RFC 3339 UTC time from Unix seconds (days to civil date after Howard
/// Hinnant's public-domain algorithm).
fn utc(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(utc(1_795_314_398, 123), "2026-11-22T02:26:38.123Z");
    }
}
