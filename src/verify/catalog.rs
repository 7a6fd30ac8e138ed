//! `--k8s`: the catalog against the bundle.

use std::collections::BTreeSet;

use super::Report;
use crate::catalog::Catalogs;
use crate::k8s::KubeVersion;
use crate::resolve::resolve;
use crate::tarball::METADATA_JSON;

/// With `--k8s`: every image the catalog lists for that version must be inside.
pub(super) fn check_completeness(report: &mut Report, version: KubeVersion, catalogs: &Catalogs) {
    let Some(metadata) = &report.metadata else {
        return;
    };
    let (Some(catalog), Some(release)) =
        (metadata["catalog"].as_str(), metadata["release"].as_str())
    else {
        report.problems.push(format!(
            "{METADATA_JSON} names no catalog release, so --k8s cannot be checked"
        ));
        return;
    };
    let release = match catalogs.find(&format!("{catalog}@{release}")) {
        Ok(release) => release,
        Err(e) => {
            report.problems.push(e.to_string());
            return;
        }
    };
    let service = metadata["service"]
        .as_str()
        .and_then(|s| release.service(s).ok());
    match resolve(release, version, service) {
        Err(e) => report.problems.push(e.to_string()),
        Ok(rows) => {
            let inside: BTreeSet<&str> = report.images.iter().map(|i| i.name.as_str()).collect();
            report.missing = rows
                .iter()
                .map(|r| r.reference().to_string())
                .filter(|r| !inside.contains(r.as_str()))
                .collect();
        }
    }
}
