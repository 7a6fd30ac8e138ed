//! `--k8s`: the catalog against the bundle.

use std::collections::BTreeSet;

use super::{Report, VerifyError};
use crate::catalog::Catalogs;
use crate::k8s::KubeVersion;
use crate::resolve::resolve;
use crate::tarball::layout::METADATA_JSON;

/// With `--k8s`: every image the catalog lists for that version must be inside. A version the bundle's
/// release does not support, or a release this ferry does not know, is the user's error, not damage.
pub(super) fn check_completeness(
    report: &mut Report,
    version: KubeVersion,
    catalogs: &Catalogs,
) -> Result<(), VerifyError> {
    let Some(metadata) = &report.metadata else {
        return Ok(());
    };
    let Some(spec) = metadata.release_spec() else {
        report.problems.push(format!(
            "{METADATA_JSON} names no catalog release, so --k8s cannot be checked"
        ));
        return Ok(());
    };
    let release = catalogs.find(&spec).map_err(VerifyError::Catalog)?;
    let service = metadata
        .service
        .as_deref()
        .and_then(|s| release.service(s).ok());
    let rows = resolve(&release, version, service).map_err(VerifyError::Kubernetes)?;
    let inside: BTreeSet<&str> = report.images.iter().map(|i| i.name.as_str()).collect();
    report.missing = rows
        .iter()
        .map(|r| r.reference().to_string())
        .filter(|r| !inside.contains(r.as_str()))
        .collect();
    Ok(())
}
