use std::io::Write;

use serde_json::json;

use super::{write_json, write_table};
use crate::catalog::{Catalogs, Release};
use crate::error::Result;
use crate::resolve::{describe_span, supported_span};

pub fn run(catalogs: &Catalogs, json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        let releases: Vec<_> = catalogs
            .releases()
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
    for r in catalogs.releases() {
        let id = if is_default(catalogs, r) {
            format!("{} (default)", r.id())
        } else {
            r.id()
        };
        rows.push(vec![
            id,
            describe_span(supported_span(r)),
            r.newest_validated_kubernetes
                .map_or_else(|| "-".into(), |v| format!("{}-{v}", r.min_kubernetes)),
            r.images.len().to_string(),
            r.origin.to_string(),
        ]);
    }
    write_table(out, &rows)
}

/// The release a bare catalog name means.
fn is_default(catalogs: &Catalogs, release: &Release) -> bool {
    catalogs
        .find(&release.catalog)
        .is_ok_and(|newest| std::ptr::eq(newest, release))
}
