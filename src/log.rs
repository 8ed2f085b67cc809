//! The `--debug FILE` log in libnvidia-container's format, so existing log scrapers keep working:
//! a banner, then `<L><MMDD HH:MM:SS>.<usec> <pid> <file>:<line>] <message>` (UTC).
//! Off by default; when off, a log call costs one branch.

use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static LOG: OnceLock<File> = OnceLock::new();

/// Open (append) the log file and write the banner. Called once, before any work.
pub fn open(path: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    file.write_all(b"\n-- WARNING, the following logs are for debugging purposes only --\n\n")?;
    let _ = LOG.set(file);
    Ok(())
}

pub fn enabled() -> bool {
    LOG.get().is_some()
}

/// Write one line; failures to log never fail the operation being logged.
pub fn write(level: char, file: &str, line: u32, msg: std::fmt::Arguments) {
    let Some(mut out) = LOG.get() else { return };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (_, month, day, hh, mm, ss) = utc_fields(now.as_secs());
    let base = file.rsplit('/').next().unwrap_or(file);
    let text = format!(
        "{level}{month:02}{day:02} {hh:02}:{mm:02}:{ss:02}.{:06} {} {base}:{line}] {msg}\n",
        now.subsec_micros(),
        std::process::id(),
    );
    let _ = out.write_all(text.as_bytes());
}

/// Year, month, day, hour, minute, second of a Unix time, in UTC (civil-from-days, proleptic
/// Gregorian).
pub fn utc_fields(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::log::enabled() {
            $crate::log::write('I', file!(), line!(), format_args!($($arg)*))
        }
    };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        if $crate::log::enabled() {
            $crate::log::write('W', file!(), line!(), format_args!($($arg)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::utc_fields;

    #[test]
    fn civil_time() {
        // 2026-11-28 09:52:20 UTC
        assert_eq!(utc_fields(1_795_859_540), (2026, 11, 28, 9, 52, 20));
        assert_eq!(utc_fields(0), (1970, 1, 1, 0, 0, 0));
        // 2024-02-29 23:59:59 UTC, a leap day
        assert_eq!(utc_fields(1_709_251_199), (2024, 2, 29, 23, 59, 59));
    }
}
