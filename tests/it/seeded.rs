//! A plain registry started for one test with images seeded into it: the setup most fetch and bundle
//! tests begin with. Apart from `seed`, which the benchmark's seeder shares and which starts no service.

use crate::seed::{push_image, Format, Seeded};
use crate::services::{require, Registry};

/// A plain registry holding `repository:tag` as [`push_image`] pushes it; `None` where the test is
/// skipped (see [`require`]).
pub fn registry_with_image(
    repository: &str,
    tag: &str,
    format: Format,
    platforms: &[&str],
    size: usize,
) -> Option<(Registry, Seeded)> {
    let registry = require(Registry::plain())?;
    let seeded = push_image(registry.addr(), repository, tag, format, platforms, size);
    Some((registry, seeded))
}

/// A plain registry holding sig-storage/livenessprobe:v2.12.0, the image most bundle tests carry, as a
/// Docker manifest list of `platforms`.
pub fn registry_with_livenessprobe(platforms: &[&str], size: usize) -> Option<(Registry, Seeded)> {
    registry_with_image(
        "sig-storage/livenessprobe",
        "v2.12.0",
        Format::DockerList,
        platforms,
        size,
    )
}
