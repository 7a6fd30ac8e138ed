use std::error::Error as _;
use std::process::ExitCode;

use ferry::progress::line_to_stderr;

fn main() -> ExitCode {
    let cli = ferry::cli::parse();
    match ferry::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            line_to_stderr(&format!("error: {err}"));
            let mut cause = err.source();
            while let Some(source) = cause {
                line_to_stderr(&format!("  caused by: {source}"));
                cause = source.source();
            }
            ExitCode::from(err.exit_code())
        }
    }
}
