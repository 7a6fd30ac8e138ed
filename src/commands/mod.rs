//! One function per subcommand: turn parsed arguments into library calls and print the result.

mod catalogs;
mod list;

use std::io::Write;

use crate::catalog::Catalogs;
use crate::cli::{Cli, Command};
use crate::error::{Error, Result};

pub fn run(cli: Cli) -> Result<()> {
    let catalogs = Catalogs::load(&cli.catalog.files)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Catalogs { json } => catalogs::run(&catalogs, json, &mut out),
        Command::List(args) => list::run(&catalogs, &args, &mut out),
    }?;
    out.flush().map_err(Error::Output)
}

/// Writes `value` as pretty JSON followed by a newline.
fn write_json(out: &mut dyn Write, value: &serde_json::Value) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| Error::Output(e.into()))?;
    writeln!(out).map_err(Error::Output)
}

/// Writes rows as left-aligned columns separated by two spaces.
fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        writeln!(out, "{line}").map_err(Error::Output)?;
    }
    Ok(())
}
