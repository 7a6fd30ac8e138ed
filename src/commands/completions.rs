//! `ferry completions SHELL`: the shell's completion script, from the clap definitions --help shows.

use std::io::Write;

use clap_complete::Shell;

use crate::error::{Error, Result};

pub fn run(shell: Shell, out: &mut dyn Write) -> Result<()> {
    // clap_complete panics when its writer fails (`| head`); it writes into memory, and we write that.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut crate::cli::command(), "ferry", &mut script);
    out.write_all(&script).map_err(Error::Output)
}
