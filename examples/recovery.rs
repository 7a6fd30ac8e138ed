//! Creates recovery data for a file, the way `ferry bundle --recovery` does, so that examples/bench.sh
//! can time it against `par2 create` on the same bundle.
//!
//! Usage: recovery FILE... PERCENT        (writes FILE.par2 and FILE.vol*.par2 for the first FILE)

use std::path::PathBuf;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(percent), false) = (args.pop(), args.is_empty()) else {
        eprintln!("usage: recovery FILE... PERCENT");
        std::process::exit(2);
    };
    let files: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
    let redundancy = percent.parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let options = ferry::recovery::CreateOptions::new(redundancy);
    match ferry::recovery::create(&files, &ferry::recovery::index_path(&files[0]), &options) {
        Ok(created) => println!(
            "{} source slices of {} bytes, {} recovery slices, {} bytes in {} files",
            created.source_slices,
            created.slice_size,
            created.recovery_slices,
            created.bytes,
            created.files.len()
        ),
        Err(error) => {
            eprintln!("{}", ferry::causes::chain(&error));
            std::process::exit(1);
        }
    }
}
