use std::io::Write;

use serde_json::json;

use super::{write_json, write_table};
use crate::catalog::Catalogs;
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
                    "kubernetes": describe_span(supported_span(r)),
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
        "ROWS".into(),
        "TITLE".into(),
        "FROM".into(),
    ]];
    for r in catalogs.releases() {
        rows.push(vec![
            r.id(),
            describe_span(supported_span(r)),
            r.images.len().to_string(),
            r.title.clone(),
            r.origin.to_string(),
        ]);
    }
    write_table(out, &rows)
}
