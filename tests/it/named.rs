//! Images named in files, through the binary: image lists (kubeadm's output, grep lines, standard input),
//! rendered manifests (helm template output, kubectl Lists, JSON), hostile YAML under a watch on ferry's
//! memory, site files, and a bundle built from a list and a manifest folder through a real registry.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::bundle::{bundle_quietly, seed_small};
use crate::ferry::{command, ferry, Run};
use crate::multiarch::inspected;
use crate::seed::{push_image, Format, PLATFORMS};
use crate::services::{require, Registry};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Each line of a table, split into its cells (the widths are not the point).
fn cells(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Runs ferry with `stdin` as its standard input.
fn ferry_with_input(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    Run {
        output: child.wait_with_output().unwrap(),
    }
}

/// Runs ferry and returns what it printed and its peak resident memory in KiB, as wait4(2) reports for
/// that one process.
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's wait cannot stand in for
fn ferry_measured(args: &[&str]) -> (Run, u64) {
    let mut child = command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the child is ours and waited for only here.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (Run { output }, usage.ru_maxrss as u64)
}

/// What `kubeadm config images list --kubernetes-version v1.28.3` prints, verbatim.
const KUBEADM_1_28_3: &str = "registry.k8s.io/kube-apiserver:v1.28.3
registry.k8s.io/kube-controller-manager:v1.28.3
registry.k8s.io/kube-scheduler:v1.28.3
registry.k8s.io/kube-proxy:v1.28.3
registry.k8s.io/pause:3.9
registry.k8s.io/etcd:3.5.9-0
registry.k8s.io/coredns/coredns:v1.10.1
";

#[test]
fn lists_from_kubeadm_grep_lines_and_standard_input() {
    let work = tempfile::tempdir().unwrap();
    let list = work.path().join("site.txt");
    std::fs::write(
        &list,
        format!(
            "# kubeadm config images list --kubernetes-version v1.28.3\n{KUBEADM_1_28_3}\n\
             # helm template calico projectcalico/tigera-operator | grep image:\n\
             \x20         image: quay.io/tigera/operator:v1.30.9\n\
             \x20       - image: \"docker.io/calico/cni:v3.26.4\"   # pinned by the chart\n\
             registry.k8s.io/pause:3.9\n"
        ),
    )
    .unwrap();
    let file = list.to_str().unwrap();
    let run = ferry(&["list", "--images-from", file]).success();
    let at = |line: usize| format!("{file}:{line}");
    let mut expected: Vec<Vec<String>> = KUBEADM_1_28_3
        .lines()
        .enumerate()
        .map(|(i, image)| row(&[image, "listed", &at(i + 2)]))
        .collect();
    expected.insert(5, row(&["listed", &at(13)])); // pause again, on the image's own row group
    expected.extend([
        row(&["quay.io/tigera/operator:v1.30.9", "listed", &at(11)]),
        row(&["docker.io/calico/cni:v3.26.4", "listed", &at(12)]),
    ]);
    assert_eq!(cells(&run.stdout()), expected);
    assert_eq!(run.stderr(), "");

    let piped = ferry_with_input(
        &["list", "--images-from", "-", "--json"],
        KUBEADM_1_28_3.as_bytes(),
    )
    .success()
    .json();
    assert_eq!(piped["images"].as_array().unwrap().len(), 7);
    assert_eq!(
        piped["images"][6],
        serde_json::json!({
            "reference": "registry.k8s.io/coredns/coredns:v1.10.1",
            "origins": [{"from": "list", "file": "standard input", "line": 7}]
        })
    );
}

#[test]
fn a_bad_line_is_refused_with_its_number_before_anything_is_fetched() {
    let work = tempfile::tempdir().unwrap();
    let list = work.path().join("k8s.txt");
    std::fs::write(
        &list,
        "registry.k8s.io/pause:3.9\n\n    image: {{ .Values.image.repository }}:{{ .Values.image.tag }}\n",
    )
    .unwrap();
    let cache = work.path().join("cache");
    let out = work.path().join("site.tar");
    for subcommand in ["pull", "bundle"] {
        let mut args = vec![
            subcommand,
            "--images-from",
            list.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        if subcommand == "bundle" {
            args.extend(["-o", out.to_str().unwrap()]);
        }
        let run = ferry(&args).fails_with(2);
        assert_eq!(
            run.stderr(),
            format!(
                "error: {} line 3: 'image: {{{{ .Values.image.repository }}}}:{{{{ .Values.image.tag }}}}' \
                 is not an image reference: the tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -\n",
                list.display()
            )
        );
    }
    assert!(
        !cache.exists(),
        "nothing was fetched, not even the cache opened"
    );
    assert!(!out.exists());
    std::fs::write(&list, "# nothing yet\n\n").unwrap();
    let run = ferry(&["pull", "--images-from", list.to_str().unwrap()]).fails_with(2);
    assert_eq!(
        run.stderr(),
        "error: nothing to fetch: the files given name no image\n"
    );
    let run = ferry(&["list", "--images-from", "/dev/zero"]).fails_with(2);
    assert_eq!(
        run.stderr(),
        "error: cannot read image list /dev/zero\n  caused by: it is a character device, not a regular file\n"
    );
}

#[test]
fn rendered_manifests_are_listed_with_the_objects_they_came_from() {
    let folder = fixtures().join("manifests");
    let dir = folder.to_str().unwrap();
    let run = ferry(&["list", "--images-from-manifests", dir]).success();
    let at = |file: &str, line: usize| format!("{dir}/{file}:{line}");
    let ksm = "registry.k8s.io/kube-state-metrics/kube-state-metrics@sha256:ec5732e28f151de3847df60f48c5a570aacdb692ff1ce949d97105ae5e5a6722";
    let exporters = "rendered/monitoring/exporters.yaml";
    let pod = "Pod shop/web-7d4b9c8f5-x2k9p";
    assert_eq!(
        cells(&run.stdout()),
        [
            row(&[
                "docker.io/library/nginx:1.25.3",
                &format!("{pod} container nginx"),
                &at("kubectl-pods.yaml", 16)
            ]),
            row(&[
                "docker.io/library/busybox:1.36",
                &format!("{pod} ephemeral container debugger-8xk2q"),
                &at("kubectl-pods.yaml", 20)
            ]),
            row(&[
                "DaemonSet monitoring/node-exporter init container wait-for-kubelet",
                &at(exporters, 20)
            ]),
            row(&[
                "Pod monitoring/monitoring-probe init container probe-node-exporter",
                &at(exporters, 102)
            ]),
            row(&[
                "Pod monitoring/monitoring-probe container probe-kube-state-metrics",
                &at(exporters, 102)
            ]),
            row(&[
                "registry.k8s.io/coredns/coredns:v1.10.1",
                "Deployment kube-system/coredns container coredns",
                &at("rendered/coredns.yaml", 117)
            ]),
            row(&[
                "quay.io/prometheus/node-exporter:v1.7.0",
                "DaemonSet monitoring/node-exporter container node-exporter",
                &at(exporters, 24)
            ]),
            row(&[
                "quay.io/brancz/kube-rbac-proxy:v0.15.0",
                "DaemonSet monitoring/node-exporter container kube-rbac-proxy",
                &at(exporters, 28)
            ]),
            row(&[
                ksm,
                "StatefulSet monitoring/kube-state-metrics container kube-state-metrics",
                &at(exporters, 48)
            ]),
            row(&[
                "StatefulSet monitoring/kube-state-metrics container kube-state-metrics-shard-1",
                &at(exporters, 48)
            ]),
            row(&[
                "docker.io/bitnami/kubectl:1.28.3",
                "CronJob monitoring/cleanup container cleanup",
                &at(exporters, 70)
            ]),
            row(&[
                "docker.io/grafana/grafana:10.2.3",
                "Job monitoring/setup container setup",
                &at(exporters, 87)
            ]),
            row(&[
                "quay.io/shop/legacy-api:2.4.1",
                "ReplicationController shop/legacy-api container api",
                &at("replication.json", 17)
            ]),
        ]
    );
    assert_eq!(
        run.stderr(),
        "passed over 7 objects of other kinds: Service 2, ClusterRole 1, ClusterRoleBinding 1, \
         ConfigMap 1, PodMonitor 1, ServiceAccount 1; passed over 1 file not named *.yaml, *.yml or *.json\n"
    );

    let json = ferry(&["list", "--images-from-manifests", dir, "--json"])
        .success()
        .json();
    assert_eq!(
        json["images"][1]["origins"][1],
        serde_json::json!({
            "from": "manifest", "file": format!("{dir}/{exporters}"), "document": 1, "line": 20,
            "kind": "DaemonSet", "namespace": "monitoring", "name": "node-exporter",
            "container": "wait-for-kubelet", "role": "init_container"
        })
    );
    assert_eq!(
        json["passed_over"],
        serde_json::json!({"objects": {"ClusterRole": 1, "ClusterRoleBinding": 1, "ConfigMap": 1,
            "PodMonitor": 1, "Service": 2, "ServiceAccount": 1}, "files": 1})
    );

    // helm template … | ferry list --images-from-manifests -
    let rendered = std::fs::read(folder.join("rendered/coredns.yaml")).unwrap();
    let piped = ferry_with_input(&["list", "--images-from-manifests", "-"], &rendered).success();
    assert_eq!(
        cells(&piped.stdout()),
        [row(&[
            "registry.k8s.io/coredns/coredns:v1.10.1",
            "Deployment kube-system/coredns container coredns",
            "standard input:117"
        ])]
    );
}

/// Hostile YAML is refused naming the file and document, while ferry's memory stays where reading the
/// fixtures leaves it.
#[test]
fn hostile_yaml_is_refused_with_flat_memory() {
    let (baseline, baseline_kib) = ferry_measured(&[
        "list",
        "--images-from-manifests",
        fixtures().join("manifests").to_str().unwrap(),
    ]);
    let baseline = baseline.success();
    assert!(baseline.stdout().contains("coredns"));

    let work = tempfile::tempdir().unwrap();
    let write = |name: &str, head: &str, repeat: &str, times: usize| {
        let path = work.path().join(name);
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        file.write_all(head.as_bytes()).unwrap();
        for _ in 0..times {
            file.write_all(repeat.as_bytes()).unwrap();
        }
        file.write_all(b"\n").unwrap();
        path
    };
    let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\ndata:\n";
    let entry = format!("  key: {}\n", "x".repeat(93));
    let cases = [
        (
            write("huge-object.yaml", config_map, &entry, 1_000_000),
            "document 1, line 1: an object is longer than 16777216 characters (Kubernetes stores none over 1.5 MiB)",
        ),
        (
            write("huge-value.yaml", &format!("{config_map}  blob: "), &"x".repeat(100), 1_000_000),
            "document 1, line 6: one value (or comment) is longer than 4194304 characters",
        ),
        (
            write("deep.yaml", "kind: Pod\n---\napiVersion: v1\nkind: Pod\nspec:\n", "- ", 10_000),
            "document 2, line 6: it nests deeper than 128 levels",
        ),
        (
            write("deep.json", "", "{\"spec\": ", 10_000),
            "document 1, line 1: it nests deeper than 128 levels",
        ),
        (
            fixtures().join("hostile/billion-laughs.yaml"),
            "document 1, line 12: its aliases expand to more than 1000000 nodes (anchors that expand without bound)",
        ),
    ];
    for (path, message) in cases {
        let (run, peak_kib) =
            ferry_measured(&["list", "--images-from-manifests", path.to_str().unwrap()]);
        let run = run.fails_with(2);
        assert_eq!(
            run.stderr(),
            format!("error: {} {message}\n", path.display())
        );
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(
            peak_kib < baseline_kib + 12 * 1024,
            "{}: {size} bytes read with a peak of {peak_kib} KiB (reading the fixtures: {baseline_kib} KiB)",
            path.display()
        );
        eprintln!(
            "{}: {size} bytes, peak {peak_kib} KiB (fixtures: {baseline_kib} KiB)",
            path.display()
        );
    }
}

#[test]
fn a_site_file_is_listed_and_an_unknown_key_refused_with_its_line() {
    let work = tempfile::tempdir().unwrap();
    let site = work.path().join("site.toml");
    std::fs::create_dir_all(work.path().join("lists")).unwrap();
    std::fs::write(
        work.path().join("lists/calico.txt"),
        "docker.io/calico/cni:v3.26.4\n",
    )
    .unwrap();
    let text = format!(
        "# Plant 7, reviewed in change OPS-1234.\n\
         platforms = [\"linux/amd64\", \"linux/arm64\"]\n\
         \n\
         [[product]]\n\
         release = \"kubernetes@1.28.3\"\n\
         [[product]]\n\
         release = \"huawei-csi@4.8.0\"\n\
         service = \"node\"\n\
         \n\
         [images]\n\
         lists = [\"lists/calico.txt\"]\n\
         manifests = [\"{}\"]\n\
         extra = [\"docker.io/library/busybox:1.36\"]\n\
         \n\
         [fetch]\n\
         mirrors = {{ \"registry.k8s.io\" = \"10.0.0.5:5000/k8s\" }}\n\
         vendor_dirs = [\"package/image\"]\n",
        fixtures().join("manifests/replication.json").display()
    );
    std::fs::write(&site, &text).unwrap();
    let run = ferry(&["list", "--site", site.to_str().unwrap()]).success();
    let place = |file: &str, line: usize| format!("{file}:{line}");
    assert_eq!(
        cells(&run.stdout()),
        [
            row(&["# kubernetes@1.28.3, Kubernetes 1.28 (7 images)"]),
            row(&[
                "registry.k8s.io/kube-apiserver:v1.28.3",
                "kube-apiserver",
                "registry"
            ]),
            row(&[
                "registry.k8s.io/kube-controller-manager:v1.28.3",
                "kube-controller-manager",
                "registry"
            ]),
            row(&[
                "registry.k8s.io/kube-scheduler:v1.28.3",
                "kube-scheduler",
                "registry"
            ]),
            row(&[
                "registry.k8s.io/kube-proxy:v1.28.3",
                "kube-proxy",
                "registry"
            ]),
            row(&["registry.k8s.io/pause:3.9", "pause", "registry"]),
            row(&["registry.k8s.io/etcd:3.5.9-0", "etcd", "registry"]),
            row(&[
                "registry.k8s.io/coredns/coredns:v1.10.1",
                "coredns",
                "registry"
            ]),
            row(&[]),
            row(&["# huawei-csi@4.8.0 node, Kubernetes 1.28 (3 images)"]),
            row(&[
                "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
                "livenessprobe",
                "registry"
            ]),
            row(&[
                "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.9.0",
                "csi-node-driver-registrar",
                "registry"
            ]),
            row(&["huawei-csi:4.8.0", "huawei-csi-driver", "vendor"]),
            row(&[]),
            row(&["# named in files (3 images)"]),
            row(&[
                "docker.io/calico/cni:v3.26.4",
                "listed",
                &place(
                    &work.path().join("lists/calico.txt").display().to_string(),
                    1
                )
            ]),
            row(&[
                "quay.io/shop/legacy-api:2.4.1",
                "ReplicationController shop/legacy-api container api",
                &place(
                    &fixtures()
                        .join("manifests/replication.json")
                        .display()
                        .to_string(),
                    17
                )
            ]),
            row(&[
                "docker.io/library/busybox:1.36",
                "site file",
                &place(&site.display().to_string(), 13)
            ]),
        ]
    );

    std::fs::write(&site, text.replace("service = ", "servce = ")).unwrap();
    let run = ferry(&["list", "--site", site.to_str().unwrap()]).fails_with(2);
    assert_eq!(
        run.stderr(),
        format!(
            "error: {} line 8: unknown field `servce`, expected `release` or `service`\n",
            site.display()
        )
    );
    std::fs::write(&site, text.replace("10.0.0.5:5000/k8s", "")).unwrap();
    let run = ferry(&["list", "--site", site.to_str().unwrap()]).fails_with(2);
    assert_eq!(
        run.stderr(),
        format!(
            "error: {} line 16: invalid --mirror 'registry.k8s.io=': '' is not a registry HOST[:PORT]; \
             expected FROM=HOST[:PORT][/PREFIX], e.g. registry.k8s.io=127.0.0.1:5000/k8s\n",
            site.display()
        )
    );
    // As bundle and pull: the reviewed file says what to carry, and a list beside it is refused.
    let run = ferry(&[
        "list",
        "--site",
        site.to_str().unwrap(),
        "--images-from",
        "k8s.txt",
    ]);
    assert_eq!(
        run.fails_with(2).stderr().lines().next().unwrap(),
        "error: the argument '--site <FILE>' cannot be used with '--images-from <FILE>'"
    );
}

/// A bundle built from a kubeadm-style list and a folder of rendered manifests, through mirrors of three
/// registries, holds exactly the images they name, each once.
#[test]
fn a_bundle_holds_exactly_the_images_a_list_and_manifests_name() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    let addr = registry.addr();
    seed_small(
        addr,
        &[
            ("pause", "3.9"),
            ("etcd", "3.5.9-0"),
            ("coredns/coredns", "v1.10.1"),
            ("hub/library/busybox", "1.36"),
        ],
    );
    let exporter = push_image(
        addr,
        "quay/prometheus/node-exporter",
        "v1.7.0",
        Format::OciIndex,
        &PLATFORMS[..2],
        60_000,
    );
    let work = tempfile::tempdir().unwrap();
    let list = work.path().join("k8s.txt");
    std::fs::write(
        &list,
        "# kubeadm config images list (what this site needs of it)\nregistry.k8s.io/pause:3.9\nregistry.k8s.io/etcd:3.5.9-0\n",
    )
    .unwrap();
    let rendered = work.path().join("rendered");
    std::fs::create_dir_all(rendered.join("node")).unwrap();
    std::fs::copy(
        fixtures().join("manifests/rendered/coredns.yaml"),
        rendered.join("coredns.yaml"),
    )
    .unwrap();
    std::fs::write(
        rendered.join("node/exporter.yaml"),
        format!(
            "---\n# Source: node/templates/daemonset.yaml\napiVersion: apps/v1\nkind: DaemonSet\n\
             metadata:\n  name: node-exporter\nspec:\n  template:\n    spec:\n      initContainers:\n\
             \x20     - name: wait\n        image: docker.io/library/busybox:1.36\n      containers:\n\
             \x20     - name: exporter\n        image: quay.io/prometheus/node-exporter@{}\n\
             \x20     - name: pause\n        image: registry.k8s.io/pause:3.9\n",
            exporter.top_digest
        ),
    )
    .unwrap();
    let out = work.path().join("site.tar");
    let run = bundle_quietly(
        work.path(),
        &out,
        &[
            "--images-from",
            list.to_str().unwrap(),
            "--images-from-manifests",
            rendered.to_str().unwrap(),
            "--mirror",
            &format!("registry.k8s.io={addr}"),
            "--mirror",
            &format!("docker.io={addr}/hub"),
            "--mirror",
            &format!("quay.io={addr}/quay"),
        ],
    )
    .success();
    assert!(
        run.stderr().starts_with(
            "passed over 5 objects of other kinds: ClusterRole 1, ClusterRoleBinding 1, ConfigMap 1, \
             Service 1, ServiceAccount 1\n"
        ),
        "{}",
        run.stderr()
    );
    let names: BTreeSet<String> = inspected(&out)
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    let expected: BTreeSet<String> = [
        "registry.k8s.io/pause:3.9".to_string(),
        "registry.k8s.io/etcd:3.5.9-0".to_string(),
        "registry.k8s.io/coredns/coredns:v1.10.1".to_string(),
        "docker.io/library/busybox:1.36".to_string(),
        format!("quay.io/prometheus/node-exporter@{}", exporter.top_digest),
    ]
    .into();
    assert_eq!(names, expected);
    ferry(&["verify", out.to_str().unwrap()]).success();
}
