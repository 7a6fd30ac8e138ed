//! Each built-in catalog checked against a second reading of the vendor's table, made apart from it
//! (the other language's guide, or the documentation site's source) and kept in `manifests/readings/`
//! as `container | image | requirement | services`. A typo in either file shows up as a difference.

use std::collections::BTreeSet;

use super::{Release, BUILT_IN, BUILT_IN_KUBERNETES};
use crate::catalog::ImageSource;

/// One row as both files can state it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    container: String,
    image: String,
    /// The requirement as written, or `-` for an image the table leaves out.
    requirement: String,
    services: Vec<String>,
}

fn reading_rows(text: &str) -> Vec<Row> {
    let mut retag: Option<(String, String)> = None;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("@retag ") {
            let (from, to) = rest.split_once(' ').expect("@retag FROM TO");
            retag = Some((format!(":{from}"), format!(":{to}")));
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let [container, image, requirement, services] = cells[..] else {
            panic!("reading line {}: expected 4 cells: {line}", n + 1);
        };
        let mut image = image.to_string();
        if let Some((from, to)) = &retag {
            if is_vendor(&image) {
                image = image.replace(from.as_str(), to);
            }
        }
        let mut services: Vec<String> = services.split_whitespace().map(String::from).collect();
        services.sort();
        rows.push(Row {
            container: container.to_string(),
            image,
            requirement: requirement.to_string(),
            services,
        });
    }
    rows
}

/// The vendor's own images are named without a registry (`huawei-csi:4.8.0`).
fn is_vendor(image: &str) -> bool {
    !image
        .split_once('/')
        .is_some_and(|(host, _)| host.contains(['.', ':']))
}

fn catalog_rows(release: &Release) -> Vec<Row> {
    release
        .images
        .iter()
        .map(|image| {
            assert_eq!(
                image.source == ImageSource::Vendor,
                is_vendor(&image.image),
                "{}: '{}' is marked {} but its name says otherwise",
                release.id(),
                image.image,
                image.source
            );
            let mut services: Vec<String> = image
                .services
                .iter()
                .map(|name| release.service(name).expect("validated").short.clone())
                .collect();
            services.sort();
            Row {
                container: image.container.clone(),
                image: image.image.clone(),
                requirement: if image.in_table {
                    image.kubernetes.clone()
                } else {
                    "-".into()
                },
                services,
            }
        })
        .collect()
}

/// The rows each side has and the other lacks, or nothing when the two readings agree.
fn differences(catalog: &[Row], reading: &[Row]) -> Vec<String> {
    let catalog: BTreeSet<&Row> = catalog.iter().collect();
    let reading: BTreeSet<&Row> = reading.iter().collect();
    let show = |r: &Row| {
        format!(
            "{} | {} | {} | {}",
            r.container,
            r.image,
            r.requirement,
            r.services.join(" ")
        )
    };
    catalog
        .difference(&reading)
        .map(|r| format!("only in the catalog: {}", show(r)))
        .chain(
            reading
                .difference(&catalog)
                .map(|r| format!("only in the reading: {}", show(r))),
        )
        .collect()
}

fn check(release: &str, reading: &str) {
    let file = format!("huawei-csi-{release}.toml");
    let release = BUILT_IN
        .iter()
        .find(|built_in| built_in.file == file)
        .unwrap_or_else(|| panic!("{file} is not built in"))
        .parse()
        .expect("valid");
    let catalog = catalog_rows(&release);
    let reading = reading_rows(reading);
    assert_eq!(
        catalog.len(),
        reading.len(),
        "{file}: row counts differ; {:#?}",
        differences(&catalog, &reading)
    );
    let diff = differences(&catalog, &reading);
    assert!(
        diff.is_empty(),
        "{file} and its second reading differ:\n{}",
        diff.join("\n")
    );
}

macro_rules! second_readings {
    ($($test:ident => $release:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check(
                    $release,
                    include_str!(concat!("../../manifests/readings/huawei-csi-", $release, ".txt")),
                );
            }
        )*
        const CHECKED: &[&str] = &[$($release),*];
    };
}

second_readings! {
    huawei_csi_3_1_0 => "3.1.0",
    huawei_csi_3_2_0 => "3.2.0",
    huawei_csi_3_2_1 => "3.2.1",
    huawei_csi_3_2_2 => "3.2.2",
    huawei_csi_3_2_3 => "3.2.3",
    huawei_csi_4_0_0 => "4.0.0",
    huawei_csi_4_1_0 => "4.1.0",
    huawei_csi_4_1_1 => "4.1.1",
    huawei_csi_4_2_0 => "4.2.0",
    huawei_csi_4_2_1 => "4.2.1",
    huawei_csi_4_3_0 => "4.3.0",
    huawei_csi_4_4_0 => "4.4.0",
    huawei_csi_4_5_0 => "4.5.0",
    huawei_csi_4_6_0 => "4.6.0",
    huawei_csi_4_7_0 => "4.7.0",
    huawei_csi_4_8_0 => "4.8.0",
    huawei_csi_4_9_0 => "4.9.0",
    huawei_csi_4_10_0 => "4.10.0",
    huawei_csi_4_10_1 => "4.10.1",
    huawei_csi_4_11_0 => "4.11.0",
    huawei_csi_4_12_0 => "4.12.0",
}

fn files_in(dir: &str, extension: &str) -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(extension))
        .collect()
}

#[test]
fn every_manifest_is_built_in_and_has_a_second_reading() {
    let built_in: BTreeSet<String> = BUILT_IN.iter().map(|b| b.file.to_string()).collect();
    let mut shipped = built_in.clone();
    shipped.insert(BUILT_IN_KUBERNETES.0.to_string());
    assert_eq!(
        files_in("manifests", ".toml"),
        shipped,
        "manifests/ and BUILT_IN differ"
    );
    let checked: BTreeSet<String> = CHECKED
        .iter()
        .map(|r| format!("huawei-csi-{r}.toml"))
        .collect();
    assert_eq!(
        built_in, checked,
        "a built-in catalog has no second-reading test"
    );
    // kubernetes.txt is checked by kubernetes_reading.rs.
    let readings: BTreeSet<String> = CHECKED
        .iter()
        .map(|r| format!("huawei-csi-{r}.txt"))
        .chain(["kubernetes.txt".to_string()])
        .collect();
    assert_eq!(files_in("manifests/readings", ".txt"), readings);
}

#[test]
fn a_typo_in_either_reading_is_caught() {
    let reading = include_str!("../../manifests/readings/huawei-csi-3.2.1.txt");
    let typo = reading.replace("csi-attacher:v3.4.0", "csi-attacher:v3.4.1");
    let result = std::panic::catch_unwind(|| check("3.2.1", &typo));
    let message = *result.unwrap_err().downcast::<String>().unwrap();
    assert!(
        message.contains(
            "only in the catalog: csi-attacher | k8s.gcr.io/sig-storage/csi-attacher:v3.4.0 | v1.17+ | controller"
        ) && message.contains(
            "only in the reading: csi-attacher | k8s.gcr.io/sig-storage/csi-attacher:v3.4.1 | v1.17+ | controller"
        ),
        "{message}"
    );
    let requirement = reading.replace(
        "| v1.13.x-v1.16.x | controller",
        "| v1.13.x-v1.15.x | controller",
    );
    assert!(std::panic::catch_unwind(|| check("3.2.1", &requirement)).is_err());
}
