use std::io::Write;

use serde_json::json;

use super::{write_json, write_table};
use crate::catalog::{Catalogs, Listed, Release};
use crate::error::{Error, Result};
use crate::resolve::{describe_span, supported_span};

/// One table row per release, except that the kubernetes catalog's releases (hundreds of patch versions)
/// are summed up per minor unless `all` asks for every one; JSON always lists every release.
pub fn run(catalogs: &Catalogs, all: bool, json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        let releases: Vec<_> = catalogs
            .releases()?
            .iter()
            .map(|r| {
                json!({
                    "catalog": r.catalog,
                    "release": r.release,
                    "title": r.title,
                    "default": is_default(catalogs, r),
                    "kubernetes": describe_span(supported_span(r)),
                    "min_kubernetes": r.min_kubernetes.to_string(),
                    "newest_validated_kubernetes": r.newest_validated_kubernetes.map(|v| v.to_string()),
                    "kubernetes_release": r.kubernetes_release.map(|v| v.to_string()),
                    "images": r.images.len(),
                    "origin": r.origin.to_string(),
                })
            })
            .collect();
        return write_json(out, &json!(releases));
    }
    let mut rows = vec![vec![
        "RELEASE".into(),
        "KUBERNETES".into(),
        "VALIDATED".into(),
        "IMAGES".into(),
        "FROM".into(),
    ]];
    let mut summed = false;
    // A summed-up row shows its newest release: the others need not be made.
    for group in groups(catalogs.listed()?, all) {
        let (newest, oldest) = (group[0].release()?, group[group.len() - 1]);
        let mut id = match group.len() {
            1 => newest.id(),
            n => format!("{}..{} ({n} releases)", oldest.id(), newest.release),
        };
        summed |= group.len() > 1;
        if is_default(catalogs, newest) {
            id = match group.len() {
                1 => format!("{id} (default)"),
                _ => format!("{id} (default: {})", newest.release),
            };
        }
        rows.push(vec![
            id,
            describe_span(supported_span(newest)),
            newest
                .newest_validated_kubernetes
                .map_or_else(|| "-".into(), |v| format!("{}-{v}", newest.min_kubernetes)),
            newest.images.len().to_string(),
            newest.origin.to_string(),
        ]);
    }
    write_table(out, &rows)?;
    if summed {
        writeln!(
            out,
            "# kubernetes: one line per minor; `ferry catalogs --all` lists every release, \
             `ferry list kubernetes@1.28.3` one release's images"
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

/// The releases to show as one row each: a kubernetes minor's releases together (newest first), unless
/// `all`.
fn groups(releases: Vec<Listed<'_>>, all: bool) -> Vec<Vec<Listed<'_>>> {
    let minor = |release: &Listed| release.kubernetes_release().map(|v| v.minor_version());
    let mut groups: Vec<Vec<Listed>> = Vec::new();
    for release in releases {
        match groups.last_mut() {
            Some(group)
                if !all
                    && release.kubernetes_release().is_some()
                    && group[0].catalog() == release.catalog()
                    && minor(&group[0]) == minor(&release) =>
            {
                group.push(release)
            }
            _ => groups.push(vec![release]),
        }
    }
    groups
}

/// The release a bare catalog name means.
fn is_default(catalogs: &Catalogs, release: &Release) -> bool {
    catalogs
        .find(&release.catalog)
        .is_ok_and(|newest| std::ptr::eq(&*newest, release))
}
