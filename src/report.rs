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
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
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
