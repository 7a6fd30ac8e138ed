use std::error::Error as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = ferry::cli::parse();
    match ferry::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ferry::Error::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            let mut cause = err.source();
            while let Some(source) = cause {
                eprintln!("  caused by: {source}");
                cause = source.source();
            }
            ExitCode::from(err.exit_code())
        }
    }
}
