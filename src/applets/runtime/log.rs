//! The shim's logging: errors go to stderr and to the files the engine and the config name, so
//! they surface in Docker's and containerd's messages (`--log FILE --log-format json` is how
//! they call runc; `[nvidia-container-runtime] debug` is the config's file).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use super::args::Scan;

/// Append one error record to the engine's `--log` file (JSON lines when `--log-format json`,
/// as runc writes them, else logrus-style text).
pub fn error(scan: &Scan, msg: &str) {
    let Some(path) = scan.log.as_deref() else {
        return;
    };
    let time = rfc3339_now();
    let line = if scan.log_format.as_deref() == Some("json") {
        let rec = serde_json::json!({"level": "error", "msg": msg, "time": time});
        format!("{rec}\n")
    } else {
        format!("time=\"{time}\" level=error msg={:?}\n", msg)
    };
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// UTC now as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, mo, d, h, mi, s) = crate::log::utc_fields(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_lines_for_the_engine() {
        let dir = std::env::temp_dir().join(format!("nvbox-rtlog-{}", std::process::id()));
        let path = dir.join("sub/log.json");
        let scan = Scan {
            log: Some(path.display().to_string()),
            log_format: Some("json".into()),
            ..Scan::default()
        };
        error(&scan, "boom \"quoted\"");
        let text = std::fs::read_to_string(&path).unwrap();
        let rec: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(rec["level"], "error");
        assert_eq!(rec["msg"], "boom \"quoted\"");
        assert_eq!(rec["time"].as_str().unwrap().len(), 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
