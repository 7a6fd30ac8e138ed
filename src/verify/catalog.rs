//! `--k8s`: the catalog against the bundle.

use std::collections::BTreeSet;

use super::{Report, VerifyError};
use crate::catalog::Catalogs;
use crate::k8s::KubeVersion;
use crate::resolve::resolve;
use crate::tarball::layout::METADATA_JSON;

/// With `--k8s`: every image the catalog lists for that version, of every release the bundle carries,
/// must be inside. A version a release does not support (a `kubernetes` release: another than its own),
/// or a release this ferry does not know, is the user's error, not damage.
pub(super) fn check_completeness(
    report: &mut Report,
    version: KubeVersion,
    catalogs: &Catalogs,
) -> Result<(), VerifyError> {
    let Some(metadata) = &report.metadata else {
        return Ok(());
    };
    let products = metadata.products();
    if products.is_empty() {
        report.problems.push(format!(
            "{METADATA_JSON} names no catalog release, so --k8s cannot be checked"
        ));
        return Ok(());
    }
    let inside: BTreeSet<&str> = report.images.iter().map(|i| i.name.as_str()).collect();
    let mut missing = Vec::new();
    for product in products {
        let release = catalogs
            .find(&product.spec())
            .map_err(VerifyError::Catalog)?;
        let service = product
            .service
            .as_deref()
            .and_then(|s| release.service(s).ok());
        let rows = resolve(&release, version, service).map_err(VerifyError::Kubernetes)?;
        for name in rows.iter().map(|r| r.reference().to_string()) {
            if !inside.contains(name.as_str()) && !missing.contains(&name) {
                missing.push(name);
            }
        }
    }
    report.missing = missing;
    Ok(())
}
