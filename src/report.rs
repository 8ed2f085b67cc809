//! The one place errors become text and exit codes: `<applet>: <context chain>` once, on stderr.

use std::process::ExitCode;

/// Unknown applet: exit 127 like a shell's "command not found", since that is what it is.
pub fn unknown_applet(name: &str) -> ExitCode {
    eprintln!("nvbox: unknown applet '{name}' (nvbox --list shows the applets)");
    ExitCode::from(127)
}

/// Print an error chain as one line and return exit status 1.
pub fn fail(applet: &str, err: &anyhow::Error) -> ExitCode {
    eprintln!("{applet}: {}", one_line(err));
    ExitCode::FAILURE
}

/// `{:#}` joins the context chain with ": "; a cause with a newline would break the one-line rule.
/// Other control characters come from hostile input (an env value with NUL, CR or an escape
/// sequence): they are shown escaped so that they cannot rewrite the terminal or a log line.
pub fn one_line(err: &anyhow::Error) -> String {
    shorten(escape_controls(&format!("{err:#}")))
}

/// Longest error line printed: a hostile 1 MB environment value quoted in an error must not
/// become a 1 MB log line.
const MAX_LINE: usize = 4096;

/// Keep the first and last quarter-lines around a note of what was cut, on char boundaries.
fn shorten(line: String) -> String {
    if line.len() <= MAX_LINE {
        return line;
    }
    let floor = |mut i: usize| {
        while !line.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let head = floor(MAX_LINE / 2);
    let tail = floor(line.len() - MAX_LINE / 4);
    format!(
        "{} …[{} bytes cut]… {}",
        &line[..head],
        tail - head,
        &line[tail..]
    )
}

/// Newlines become spaces, every other control character its `\u{..}` escape.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push(' '),
            '\t' => out.push('\t'),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// Data for stdout, written so that a reader that went away (`| head`) is an error the caller's
/// `finish` ignores, instead of the panic `print!` raises.
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Turn an applet's result into its exit status. A closed stdout (`| head`) is not an error.
pub fn finish(applet: &str, result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => fail(applet, &err),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_in_the_middle() {
        let err = anyhow::anyhow!("unknown device {}é", "x".repeat(1 << 20));
        let line = one_line(&err);
        assert!(line.len() < MAX_LINE + 64, "{}", line.len());
        assert!(line.starts_with("unknown device xxx"));
        assert!(line.ends_with("xxé"));
        assert!(line.contains(" bytes cut]… "));
        assert_eq!(one_line(&anyhow::anyhow!("short")), "short");
    }

    #[test]
    fn one_line_escapes_what_hostile_input_carries() {
        let err = anyhow::anyhow!("device error: a\0b\r\x1b[2Jc\nd: unknown device");
        assert_eq!(
            one_line(&err),
            "device error: a\\u{0}b\\r\\u{1b}[2Jc d: unknown device"
        );
        assert_eq!(escape_controls("GPU-0\tplain é"), "GPU-0\tplain é");
    }
}
