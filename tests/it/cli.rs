//! The resolve half of ferry, through the binary: catalogs, list, errors and exit codes.

use std::time::Duration;

use crate::ferry::{command, ferry, mkfifo, run_within};

fn listed(args: &[&str]) -> Vec<(String, String)> {
    let run = ferry(args).success();
    run.json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_string(),
                o["image"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    rows.iter()
        .map(|(n, i)| (n.to_string(), i.to_string()))
        .collect()
}

#[test]
fn list_480_for_118_is_exactly_the_tables_117_to_119_rows() {
    let expected = pairs(&[
        (
            "livenessprobe",
            "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
        ),
        (
            "csi-resizer",
            "registry.k8s.io/sig-storage/csi-resizer:v1.9.0",
        ),
        (
            "csi-node-driver-registrar",
            "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.9.0",
        ),
        (
            "csi-snapshotter",
            "registry.k8s.io/sig-storage/csi-snapshotter:v4.2.1",
        ),
        (
            "snapshot-controller",
            "registry.k8s.io/sig-storage/snapshot-controller:v4.2.1",
        ),
        (
            "csi-provisioner",
            "registry.k8s.io/sig-storage/csi-provisioner:v3.0.0",
        ),
        (
            "csi-attacher",
            "registry.k8s.io/sig-storage/csi-attacher:v4.4.0",
        ),
        (
            "storage-backend-controller",
            "storage-backend-controller:4.8.0",
        ),
        ("storage-backend-sidecar", "storage-backend-sidecar:4.8.0"),
        ("huawei-csi-driver", "huawei-csi:4.8.0"),
        ("huawei-csi-extender", "huawei-csi-extender:4.8.0"),
    ]);
    assert_eq!(
        listed(&["list", "huawei-csi@4.8.0", "--k8s", "1.18", "--json"]),
        expected
    );
}

#[test]
fn list_json_carries_services_source_and_requirement() {
    let run = ferry(&["list", "huawei-csi@4.8.0", "--k8s", "v1.16.4", "--json"]).success();
    let rows = run.json();
    let attacher = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "csi-attacher")
        .unwrap();
    assert_eq!(attacher["image"], "quay.io/k8scsi/csi-attacher:v1.2.1");
    assert_eq!(
        attacher["k8s"], "v.1.16.x",
        "the requirement as the table writes it"
    );
    assert_eq!(attacher["source"], "registry");
    assert_eq!(
        attacher["services"],
        serde_json::json!(["huawei-csi-controller"])
    );
    let driver = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "huawei-csi-driver")
        .unwrap();
    assert_eq!(driver["source"], "vendor");
    assert_eq!(driver["reference"], "docker.io/library/huawei-csi:4.8.0");
    assert_eq!(driver["helm_value"], "images.huaweiCSIService");
}

#[test]
fn node_service_gets_only_its_three_images() {
    let expected = pairs(&[
        (
            "livenessprobe",
            "k8s.gcr.io/sig-storage/livenessprobe:v2.5.0",
        ),
        (
            "csi-node-driver-registrar",
            "k8s.gcr.io/sig-storage/csi-node-driver-registrar:v2.3.0",
        ),
        ("huawei-csi-driver", "huawei-csi:4.5.0"),
    ]);
    assert_eq!(
        listed(&[
            "list",
            "huawei-csi@4.5.0",
            "--k8s",
            "1.28.3+k3s1",
            "--service",
            "node",
            "--json"
        ]),
        expected
    );
}

#[test]
fn plain_output_is_one_image_a_line() {
    let out = ferry(&["list", "huawei-csi", "--k8s", "1.28"])
        .success()
        .stdout();
    let lines: Vec<&str> = out.lines().collect();
    // The newest release, 4.12.0: 7 public sidecars, the health monitor, 4 vendor images.
    assert_eq!(lines.len(), 12, "{out}");
    assert!(
        lines[0].starts_with("registry.k8s.io/sig-storage/livenessprobe:v2.15.0 "),
        "{out}"
    );
    assert!(lines[0].split_whitespace().eq([
        "registry.k8s.io/sig-storage/livenessprobe:v2.15.0",
        "livenessprobe",
        "registry"
    ]));
}

#[test]
fn every_release_lists_on_every_version_it_supports() {
    let catalogs = ferry(&["catalogs", "--json"]).success().json();
    // The kubernetes catalog's releases serve their own version only: tests/it/kubernetes.rs.
    let products = catalogs.as_array().unwrap().iter();
    for release in products.filter(|r| r["catalog"] == "huawei-csi") {
        let id = format!("huawei-csi@{}", release["release"].as_str().unwrap());
        let floor: u32 = release["min_kubernetes"].as_str().unwrap()[2..]
            .parse()
            .unwrap();
        // Every minor is resolved in the unit tests; here the floor, the span boundaries and a late one.
        for minor in [floor, floor + 1, 17, 20, 25, 36]
            .into_iter()
            .filter(|m| *m >= floor)
        {
            let version = format!("1.{minor}");
            let run = ferry(&["list", &id, "--k8s", &version]).success();
            assert!(
                run.stdout().lines().count() >= 6,
                "{id} {version}: {}",
                run.stdout()
            );
        }
        let below = format!("1.{}", floor - 1);
        let run = ferry(&["list", &id, "--k8s", &below]).fails_with(2);
        assert!(
            run.stderr()
                .contains(&format!("it supports Kubernetes 1.{floor} and later")),
            "{id}: {}",
            run.stderr()
        );
    }
}

#[test]
fn newer_than_validated_warns_on_stderr_and_still_lists() {
    let run = ferry(&["list", "huawei-csi@3.2.1", "--k8s", "1.30"]).success();
    assert_eq!(
        run.stderr().trim(),
        "warning: huawei-csi 3.2.1 was validated by the vendor up to Kubernetes 1.25; 1.30 uses the \
         images its table lists for later versions"
    );
    assert_eq!(run.stdout().lines().count(), 8, "{}", run.stdout());
    let run = ferry(&["list", "huawei-csi@3.2.1", "--k8s", "1.25"]).success();
    assert!(run.stderr().is_empty(), "{}", run.stderr());
}

#[test]
fn unsupported_version_fails_naming_the_range() {
    let run = ferry(&["list", "huawei-csi@4.8.0", "--k8s", "1.15"]).fails_with(2);
    assert!(run.stdout().is_empty());
    assert!(
        run.stderr().contains("does not support Kubernetes 1.15"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("1.16 and later"), "{}", run.stderr());
}

#[test]
fn unknown_release_lists_what_exists() {
    let run = ferry(&["list", "huawei-csi@4.9.9", "--k8s", "1.28"]).fails_with(2);
    assert!(
        run.stderr()
            .contains("available: 4.12.0, 4.11.0, 4.10.1, 4.10.0, 4.9.0")
            && run.stderr().contains("3.2.0, 3.1.0"),
        "{}",
        run.stderr()
    );
    let run = ferry(&[
        "list",
        "huawei-csi@4.8.0",
        "--k8s",
        "1.28",
        "--service",
        "web",
    ])
    .fails_with(2);
    assert!(
        run.stderr().contains("controller") && run.stderr().contains("node"),
        "{}",
        run.stderr()
    );
}

#[test]
fn bad_version_text_is_a_usage_error() {
    let run = ferry(&["list", "huawei-csi", "--k8s", "latest"]).fails_with(2);
    assert!(
        run.stderr().contains("not a Kubernetes version"),
        "{}",
        run.stderr()
    );
}

#[test]
fn all_k8s_shows_each_distinct_set_with_its_span() {
    let run = ferry(&["list", "huawei-csi@4.8.0", "--all-k8s", "--json"]).success();
    let spans: Vec<(String, usize)> = run
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["k8s"].as_str().unwrap().to_string(),
                s["images"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        spans,
        [
            ("1.16".into(), 9),
            ("1.17-1.19".into(), 11),
            ("1.20+".into(), 11)
        ]
    );
    let text = ferry(&["list", "huawei-csi@4.8.0", "--all-k8s"])
        .success()
        .stdout();
    assert!(
        text.contains("# Kubernetes 1.17-1.19 (11 images)"),
        "{text}"
    );
    assert!(
        text.contains("# Kubernetes 1.20 and later (11 images)"),
        "{text}"
    );
}

#[test]
fn catalogs_lists_built_in_and_user_files() {
    let out = ferry(&["catalogs"]).success().stdout();
    assert!(
        out.contains("huawei-csi@4.8.0") && out.contains("huawei-csi@4.5.0"),
        "{out}"
    );
    // RELEASE, KUBERNETES, VALIDATED, IMAGES, then where it came from.
    let starts = |expected: &str| {
        let words = expected.split(' ').count();
        let line = out
            .lines()
            .find(|l| l.starts_with(expected.split(' ').next().unwrap()))
            .unwrap_or_else(|| panic!("{expected} missing: {out}"));
        assert_eq!(
            line.split_whitespace()
                .take(words)
                .collect::<Vec<_>>()
                .join(" "),
            expected
        );
    };
    starts("huawei-csi@4.12.0 (default) 1.16 and later 1.16-1.35 17");
    starts("huawei-csi@3.2.3 1.13 and later 1.13-1.25 10");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("huawei-csi@")).count(),
        21
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.toml");
    std::fs::write(
        &path,
        "catalog = \"demo\"\nrelease = \"1.0.0\"\ntitle = \"Demo\"\nmin_kubernetes = \"1.25\"\n\
         [[services]]\nname = \"demo-app\"\nshort = \"app\"\n\
         [[images]]\ncontainer = \"web\"\nimage = \"nginx:1.27\"\nkubernetes = \"v1.25+\"\n\
         kubernetes_range = { min = \"1.25\" }\nservices = [\"demo-app\"]\nsource = \"registry\"\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let out = ferry(&["--catalog-file", file, "catalogs"])
        .success()
        .stdout();
    assert!(
        out.contains("demo@1.0.0") && out.contains("huawei-csi@4.8.0"),
        "{out}"
    );
    let listed = ferry(&["list", "demo", "--k8s", "1.30", "--catalog-file", file])
        .success()
        .stdout();
    assert!(listed.starts_with("nginx:1.27"), "{listed}");

    std::fs::write(&path, "catalog = \"demo\"\n").unwrap();
    let run = ferry(&["--catalog-file", file, "catalogs"]).fails_with(2);
    assert!(
        run.stderr().contains(file),
        "the error names the file: {}",
        run.stderr()
    );
    // A missing file and a file that never ends are bad input too, named, not read forever.
    let missing = dir.path().join("absent.toml");
    let run = ferry(&["--catalog-file", missing.to_str().unwrap(), "catalogs"]).fails_with(2);
    assert_eq!(
        run.stderr(),
        format!(
            "error: cannot read catalog file {}\n  caused by: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    let run = ferry(&["--catalog-file", "/dev/zero", "catalogs"]).fails_with(2);
    assert_eq!(
        run.stderr(),
        "error: cannot read catalog file /dev/zero\n  caused by: it is a character device, not a regular file\n"
    );
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 1 << 21]).unwrap();
    let run = ferry(&["--catalog-file", big.to_str().unwrap(), "catalogs"]).fails_with(2);
    assert_eq!(
        run.stderr(),
        format!(
            "error: cannot read catalog file {}\n  caused by: it is larger than 1048576 bytes, which no such file is\n",
            big.display()
        )
    );
    // A FIFO blocked ferry forever (issue 20, item 6).
    let fifo = dir.path().join("fifo.toml");
    mkfifo(&fifo);
    let run = run_within(
        command().args(["--catalog-file", fifo.to_str().unwrap(), "catalogs"]),
        Duration::from_secs(30),
    )
    .fails_with(2);
    assert_eq!(
        run.stderr(),
        format!(
            "error: cannot read catalog file {}\n  caused by: it is a FIFO (named pipe), not a regular file\n",
            fifo.display()
        )
    );
}

const DEMO: &str =
    "catalog = \"demo\"\nrelease = \"1.0.0\"\ntitle = \"Demo\"\nmin_kubernetes = \"1.25\"\n\
    [[services]]\nname = \"demo-app\"\nshort = \"app\"\n\
    [[images]]\ncontainer = \"web\"\nimage = \"nginx:1.27\"\nkubernetes = \"v1.25+\"\n\
    kubernetes_range = { min = \"1.25\" }\nservices = [\"demo-app\"]\nsource = \"registry\"\n\
    helm_value = \"images.web\"\n";

/// What a catalog file names ends up in file names, Helm values and on the terminal: a release that is
/// a path put the bundle outside -o, a helm_value with newlines added YAML keys, and control characters
/// reached the terminal raw (issue 20, items 5 and 12).
#[test]
fn a_catalog_file_cannot_name_a_path_a_yaml_key_or_a_terminal_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.toml");
    let file = path.to_str().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let names =
        "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'";
    for (from, to, message) in [
        (
            "release = \"1.0.0\"",
            "release = \"1/../../escape\"",
            "release '1/../../escape' must be a version (e.g. 4.8.0): 1 to 64 letters, digits, '.', \
             '_', '-' or '+', starting with a digit, without '..'"
                .to_string(),
        ),
        (
            "catalog = \"demo\"",
            "catalog = \"../demo\"",
            format!("catalog name '../demo' must be {names}"),
        ),
        (
            "short = \"app\"",
            "short = \"a/p\"",
            format!("service short name 'a/p' must be {names}"),
        ),
        (
            "helm_value = \"images.web\"",
            "helm_value = \"images.web\\nsecurityContext:\\n  privileged: true\"",
            "image 'nginx:1.27' (web): helm_value 'images.web\\nsecurityContext:\\n  privileged: true' \
             must be images.KEY or images.GROUP.KEY, each a name of letters, digits, '_' or '-' \
             starting with a letter"
                .to_string(),
        ),
        (
            "title = \"Demo\"",
            "title = \"Demo\\u001b]2;owned\\u0007\\u001b[2J\"",
            "title 'Demo\\u{1b}]2;owned\\u{7}\\u{1b}[2J' holds control characters".to_string(),
        ),
    ] {
        assert!(DEMO.contains(from), "{from}");
        std::fs::write(&path, DEMO.replacen(from, to, 1)).unwrap();
        let run = ferry(&[
            "bundle",
            "demo@1.0.0",
            "--k8s",
            "1.30",
            "--catalog-file",
            file,
            "-o",
            &format!("{}/", out.display()),
        ])
        .fails_with(2);
        assert_eq!(run.stderr(), format!("error: {file}: {message}\n"), "{to}");
        assert!(!run.output.stderr.contains(&0x1b), "no escape reaches the terminal");
    }
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["demo.toml", "out"], "nothing written anywhere");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    std::fs::write(&path, DEMO).unwrap();
    ferry(&["list", "demo", "--k8s", "1.30", "--catalog-file", file]).success();
}

/// A TOML error named the line and echoed it whole: 800 kB for a one-line file (issue 21, item 11).
#[test]
fn a_catalog_files_toml_error_says_where_without_echoing_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one-line.toml");
    std::fs::write(&path, format!("title = \"{}\" x", "t".repeat(800_000))).unwrap();
    let file = path.to_str().unwrap();
    let run = ferry(&["--catalog-file", file, "catalogs"]).fails_with(2);
    assert_eq!(
        run.stderr(),
        format!(
            "error: {file}: not a valid catalog: line 1, column 800012: unexpected key or value, \
             expected newline, `#` (at 'x')\n"
        )
    );
}

#[test]
fn k8s_or_all_k8s_is_required() {
    let run = ferry(&["list", "huawei-csi"]).fails_with(2);
    assert!(run.stderr().contains("--k8s"), "{}", run.stderr());
}

/// `--version` names the commit and each catalog's newest release (the catalogs are loaded for it alone);
/// `-V` is the version.
#[test]
fn version_names_the_newest_catalog_releases() {
    let long = ferry(&["--version"]).success();
    let text = long.stdout();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("ferry 0.1.0 ("), "{}", lines[0]);
    assert_eq!(
        lines[1],
        "newest catalog releases: huawei-csi@4.12.0, kubernetes@1.35.7"
    );
    let short = ferry(&["-V"]).success();
    assert_eq!(short.stdout(), "ferry 0.1.0\n");
}
