//! One function per subcommand: turn parsed arguments into library calls and print the result.

mod bundle;
mod catalogs;
mod completions;
mod deliver;
mod diff;
mod list;
mod manpages;
mod merge;
mod pull;
mod repair;
mod serve;
mod verify;

use std::io::Write;
use std::path::PathBuf;

use crate::cache::BlobStore;
use crate::catalog::Catalogs;
use crate::cli::{Cli, Command, FetchArgs, ImageSelection, PlatformArg};
use crate::error::{Error, Result};
use crate::fetch::{FetchSettings, VendorSource};
use crate::progress::{line_to_stderr, Reporter, Silent, TerminalReporter, UntilClosed};
use crate::reference::Reference;
use crate::registry::Mirror;
use crate::registry::RegistryOptions;
use crate::resolve::named::NamedImages;
use crate::resolve::site::Site;
use crate::resolve::site::SitePlatforms;
use crate::resolve::{Plan, ProductSpec, Selection};

pub fn run(cli: Cli) -> Result<()> {
    let catalogs = Catalogs::load(&cli.catalog.files)?;
    let stdout = std::io::stdout();
    let mut out = UntilClosed::new(stdout.lock());
    match cli.command {
        Command::Catalogs { all, json } => catalogs::run(&catalogs, all, json, &mut out),
        Command::List(args) => list::run(&catalogs, &args, &mut out),
        Command::Diff(args) => diff::run(&catalogs, &args, &mut out),
        Command::Pull(args) => pull::run(&catalogs, &args, &mut out),
        Command::Bundle(args) => bundle::run(&catalogs, &args, &mut out),
        Command::Verify(args) => verify::run(&catalogs, &args, &mut out),
        Command::Inspect(args) => verify::inspect(&catalogs, &args, &mut out),
        Command::Merge(args) => merge::run(&catalogs, &args, &mut out),
        Command::Push(args) => deliver::push(&catalogs, &args, &mut out),
        Command::Load(args) => deliver::load(&catalogs, &args, &mut out),
        Command::Serve(args) => serve::run(&catalogs, &args, &mut out),
        Command::Repair(args) => repair::run(&catalogs, &args, &mut out),
        Command::Completions { shell } => completions::run(shell, &mut out),
        Command::Manpages { dir } => manpages::run(&dir, &mut out),
    }
    // Whatever failed after a signal failed because of it; the signal decides the exit code.
    .map_err(|error| crate::interrupt::pending().map_or(error, Error::Interrupted))?;
    out.flush().map_err(Error::Output)
}

/// Writes `value` as pretty JSON followed by a newline.
fn write_json(out: &mut dyn Write, value: &serde_json::Value) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| Error::Output(e.into()))?;
    writeln!(out).map_err(Error::Output)
}

/// The most characters a table shows of one cell; the rest is cut (a bundle's annotations are anyone's).
const MAX_CELL: usize = 200;

/// Writes rows as left-aligned columns separated by two spaces, each cell escaped and cut to
/// `MAX_CELL` characters for display.
fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> Result<()> {
    let rows: Vec<Vec<std::borrow::Cow<str>>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| crate::io::shown(cell, MAX_CELL))
                .collect()
        })
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                // Padded by hand: a format width above 65,535 panics.
                let padding = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', padding));
            }
        }
        writeln!(out, "{line}").map_err(Error::Output)?;
    }
    Ok(())
}

/// What the fetch step takes from the command line, shared by pull and bundle.
struct FetchSetup {
    /// The cache's root, opened only once the command's own checks passed.
    cache: PathBuf,
    settings: FetchSettings,
    reporter: Box<dyn Reporter>,
}

/// The site file `--site` names, read and checked, once the flags beside it are known to be ones that
/// add to it: flags that say what to carry are refused, since the reviewed file decides that. Without
/// a site, the flags that choose among a release's images need one.
fn load_site(selection: &ImageSelection, fetch: &FetchArgs) -> Result<Option<Site>> {
    let for_releases = [
        (!selection.versions.is_empty(), "--k8s"),
        (selection.all_versions, "--all-k8s"),
        (selection.all_releases, "--all-releases"),
        (selection.service.is_some(), "--service"),
    ];
    let Some(path) = &selection.site else {
        if let (true, Some((_, flag))) = (
            selection.releases.is_empty(),
            for_releases.iter().find(|(given, _)| *given),
        ) {
            return Err(Error::Usage(format!(
                "{flag} chooses among a release's images: name one (CATALOG@RELEASE, e.g. \
                 huawei-csi@4.8.0)"
            )));
        }
        return Ok(None);
    };
    let named = [(!selection.releases.is_empty(), "CATALOG@RELEASE")];
    let given = [
        (!selection.extra.is_empty(), "--image"),
        (!selection.files.lists.is_empty(), "--images-from"),
        (
            !selection.files.manifests.is_empty(),
            "--images-from-manifests",
        ),
        (!fetch.platforms.is_empty(), "--platform"),
        (
            !fetch.allow_single_platform.is_empty(),
            "--allow-single-platform",
        ),
        (fetch.skip_vendor, "--skip-vendor"),
        (fetch.vendor_registry.is_some(), "--vendor-registry"),
    ];
    let refused: Vec<&str> = named
        .iter()
        .chain(&for_releases)
        .chain(&given)
        .filter(|(given, _)| *given)
        .map(|(_, flag)| *flag)
        .collect();
    if !refused.is_empty() {
        return Err(Error::Usage(format!(
            "{} cannot be given with --site: {} says what to carry (write it there, or leave --site \
             out); --mirror, --vendor-dir, --insecure-registry and --ca-cert add to it",
            refused.join(", "),
            path.display()
        )));
    }
    let site = Site::load(path)?;
    if !fetch.vendor_dir.is_empty()
        && (site.fetch.skip_vendor || site.fetch.vendor_registry.is_some())
    {
        return Err(Error::Usage(format!(
            "--vendor-dir cannot be given with --site: {} gets the vendor's images by its {}",
            path.display(),
            if site.fetch.skip_vendor {
                "skip_vendor"
            } else {
                "vendor_registry"
            }
        )));
    }
    Ok(Some(site))
}

/// The image sets `selection` (or the site file) names, one per bundle (and per release, with
/// --all-releases). Images named in files join the `--image` ones; a bad line or manifest, a product
/// that is not in the catalogs or a Kubernetes version that disagrees stops the run before anything is
/// fetched.
fn plan_images(
    catalogs: &Catalogs,
    selection: &ImageSelection,
    site: Option<&Site>,
) -> Result<Vec<Plan>> {
    let named = match site {
        Some(site) => NamedImages::read_site(site)?,
        None => NamedImages::read(&selection.files.lists, &selection.files.manifests)?,
    };
    if let Some(note) = named.passed_over.note() {
        line_to_stderr(&note);
    }
    let mut seen = std::collections::HashSet::new();
    let extra: Vec<Reference> = selection
        .extra
        .iter()
        .chain(named.references())
        .filter(|r| seen.insert(*r))
        .cloned()
        .collect();
    if let Some(site) = site {
        let found = site.releases(catalogs)?;
        for product in &found {
            warn_beyond_validated(&product.release, &site.kubernetes);
        }
        return Ok(crate::resolve::plans(
            catalogs,
            &Selection {
                products: site
                    .products
                    .iter()
                    .map(|p| ProductSpec {
                        release: &p.release,
                        service: p.service.as_deref(),
                    })
                    .collect(),
                versions: &site.kubernetes,
                all_versions: false,
                extra: &extra,
            },
        )?);
    }
    if extra.is_empty() && selection.releases.is_empty() && !selection.files.is_empty() {
        return Err(Error::Usage(
            "nothing to fetch: the files given name no image".into(),
        ));
    }
    let mut plans = Vec::new();
    for releases in releases_to_plan(catalogs, selection)? {
        plans.extend(crate::resolve::plans(
            catalogs,
            &Selection {
                products: releases
                    .iter()
                    .map(|release| ProductSpec {
                        release,
                        service: selection.service.as_deref(),
                    })
                    .collect(),
                versions: &selection.versions,
                all_versions: selection.all_versions,
                extra: &extra,
            },
        )?);
    }
    Ok(plans)
}

/// The cache, the fetch settings and the progress output `args` (and the site file) say (the catalogs'
/// registries tell a misspelt --mirror from an unused one). From here on a signal stops the run cleanly.
fn fetch_setup(catalogs: &Catalogs, args: &FetchArgs, site: Option<&Site>) -> Result<FetchSetup> {
    crate::interrupt::install();
    // A --mirror comes first: for a registry the site file mirrors too, the flag's is the one used.
    let mut mirrors = args.mirrors.clone();
    if let Some(site) = site {
        mirrors.extend(site_mirrors(site)?);
    }
    // A site file's platforms exclude --platform (site_selection); none carried means every one.
    let platforms = match (site.map(|s| &s.platforms), args.platforms.as_slice()) {
        (Some(SitePlatforms::Listed(listed)), _) => listed.clone(),
        (Some(SitePlatforms::Every), _) => Vec::new(),
        (_, []) => vec![crate::image::Platform::linux_amd64()],
        (_, given) => distinct(given)?,
    };
    // Only a mirror's registry is ever looked up among them, and finding one may take parsing releases.
    let catalog_registries = catalogs.registries_among(mirrors.iter().map(|m| m.from.as_str()))?;
    let fetch = site.map(|site| &site.fetch);
    let vendor_dirs: Vec<PathBuf> = fetch
        .iter()
        .flat_map(|f| f.vendor_dirs.iter())
        .chain(&args.vendor_dir)
        .cloned()
        .collect();
    let vendor_registry = fetch
        .and_then(|f| f.vendor_registry.clone())
        .or_else(|| args.vendor_registry.clone());
    let skip_vendor = fetch.is_some_and(|f| f.skip_vendor) || args.skip_vendor;
    let settings = FetchSettings {
        platforms,
        partial_ok: fetch
            .map(|f| f.allow_single_platform.clone())
            .unwrap_or_else(|| args.allow_single_platform.clone()),
        jobs: usize::from(args.jobs),
        registry: RegistryOptions {
            mirrors,
            insecure: args.insecure.clone(),
            ca_certs: args.ca_certs.clone(),
            catalog_registries,
            ..Default::default()
        },
        vendor: match (vendor_registry, skip_vendor) {
            _ if !vendor_dirs.is_empty() => VendorSource::Dirs(vendor_dirs),
            (Some(registry), _) => VendorSource::Registry(registry),
            (_, true) => VendorSource::Skip,
            _ => VendorSource::Unspecified {
                site: site.map(|site| site.path.clone()),
            },
        },
    };
    Ok(FetchSetup {
        cache: args
            .cache_dir
            .clone()
            .unwrap_or_else(BlobStore::default_root),
        settings,
        reporter: reporter(args.quiet),
    })
}

/// A site file's mirrors, each refused with its line when it is not `FROM=HOST[:PORT][/PREFIX]`.
fn site_mirrors(site: &Site) -> Result<Vec<Mirror>> {
    site.fetch
        .mirrors
        .iter()
        .map(|(mirror, line)| {
            mirror
                .parse::<Mirror>()
                .map_err(|e| Error::Usage(format!("{} line {line}: {e}", site.path.display())))
        })
        .collect()
}

/// Progress on stderr, or (`--quiet`) warnings only.
fn reporter(quiet: bool) -> Box<dyn Reporter> {
    if quiet {
        Box::new(Silent)
    } else {
        Box::new(TerminalReporter::new())
    }
}

/// `--platform` values in the order given, each once; none for `all`, which stands alone.
pub(super) fn distinct(platforms: &[PlatformArg]) -> Result<Vec<crate::image::Platform>> {
    let mut once: Vec<crate::image::Platform> = Vec::new();
    for platform in platforms {
        match platform {
            PlatformArg::One(platform) if !once.contains(platform) => once.push(platform.clone()),
            PlatformArg::One(_) => {}
            PlatformArg::All if platforms.len() == 1 => return Ok(Vec::new()),
            PlatformArg::All => {
                return Err(Error::Usage(
                    "--platform all carries every platform each image has; name no other platform \
                     beside it"
                        .into(),
                ))
            }
        }
    }
    Ok(once)
}

/// The products of each bundle to plan, as `catalog@release` (none, for images alone): the releases
/// named, together; or, with --all-releases, each release of one catalog on its own. Versions newer
/// than the vendor validated are served (the tables say `v1.20+`), with a word on stderr; with
/// --all-releases, a release that does not support a requested version is skipped with a note.
fn releases_to_plan(catalogs: &Catalogs, selection: &ImageSelection) -> Result<Vec<Vec<String>>> {
    let specs = &selection.releases;
    if !selection.all_releases {
        for spec in specs {
            if let Ok(release) = catalogs.find(spec) {
                warn_beyond_validated(&release, &selection.versions);
            }
        }
        return Ok(vec![specs.clone()]);
    }
    let spec = match specs.as_slice() {
        [one] => one,
        several => {
            return Err(Error::Usage(format!(
                "--all-releases makes one bundle per release of one catalog, and {} are named ({}): \
                 give --all-releases one catalog (huawei-csi, or a range huawei-csi@3.2.0..3.2.3), or \
                 name each release without it to bundle them together",
                several.len(),
                several.join(", ")
            )))
        }
    };
    if spec.contains('@') && !spec.contains("..") {
        return Err(Error::Usage(format!(
            "--all-releases takes a catalog (huawei-csi) or a range (huawei-csi@3.2.0..3.2.3), not {spec}"
        )));
    }
    let mut chosen = Vec::new();
    for release in catalogs.select(spec)? {
        let unsupported = selection
            .versions
            .iter()
            .find_map(|v| crate::resolve::resolve(release, *v, None).err());
        match unsupported {
            Some(why) => line_to_stderr(&format!("skipped {}: {why}", release.id())),
            None => {
                warn_beyond_validated(release, &selection.versions);
                chosen.push(vec![release.id()]);
            }
        }
    }
    if chosen.is_empty() {
        return Err(Error::Usage(format!(
            "no release of {spec} supports the Kubernetes versions asked for"
        )));
    }
    Ok(chosen)
}

fn warn_beyond_validated(release: &crate::catalog::Release, versions: &[crate::k8s::KubeVersion]) {
    if let Some(assumed) = &release.assumed {
        line_to_stderr(&format!("warning: {assumed}"));
    }
    for version in versions {
        if let Some(warning) = crate::resolve::validation_warning(release, *version) {
            line_to_stderr(&format!("warning: {warning}"));
        }
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_cuts_and_escapes_cells_and_never_panics() {
        let long = format!("a{}z", "b".repeat(70_000));
        let rows = vec![
            vec!["IMAGE".to_string(), "SIZE".to_string()],
            vec![long, "1 MB".to_string()],
            vec!["x\u{1b}[2J".to_string(), "2 MB".to_string()],
        ];
        let mut out = Vec::new();
        write_table(&mut out, &rows).unwrap();
        let cut = format!(
            "a{}…(69802 characters cut)…{}z",
            "b".repeat(99),
            "b".repeat(99)
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "IMAGE{}  SIZE\n{cut}  1 MB\nx\\u{{1b}}[2J{}  2 MB\n",
                " ".repeat(cut.chars().count() - 5),
                " ".repeat(cut.chars().count() - 10)
            )
        );
    }
}
