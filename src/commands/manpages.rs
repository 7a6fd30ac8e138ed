//! `ferry manpages DIR`: one man page for ferry and one per subcommand, from the clap definitions --help
//! shows, so that they never drift from it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

pub fn run(dir: &Path, out: &mut dyn Write) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    // As clap_mangen's own generator does: no `help` pseudo-subcommand, and names built (ferry-verify).
    let mut root = crate::cli::command().disable_help_subcommand(true);
    root.build();
    write_pages(&root, dir, out)
}

fn write_pages(command: &clap::Command, dir: &Path, out: &mut dyn Write) -> Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page).map_err(Error::Output)?;
    write_file(&path, &page).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    writeln!(out, "{}", path.display()).map_err(Error::Output)?;
    for subcommand in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(subcommand, dir, out)?;
    }
    Ok(())
}

/// Writes beside `path` and renames over it: a symlink or FIFO already there is replaced, never
/// followed, and a failed run leaves no half-written page.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
