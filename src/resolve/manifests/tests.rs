use std::io::Cursor;

use super::yaml::{Limits, Reader, YamlErrorKind};
use super::*;

fn scan_text(text: &str) -> Result<Scan, ManifestError> {
    let mut scan = Scan::default();
    scan_reader(
        Cursor::new(text.as_bytes().to_vec()),
        &Source::File("m.yaml".into()),
        &mut scan,
    )?;
    Ok(scan)
}

/// Each image as `ferry list` shows its origin: reference, object and container, file and line.
fn described(scan: &Scan) -> Vec<String> {
    scan.images
        .iter()
        .map(|i| {
            let file = i.input.to_string();
            let file = file
                .rsplit("manifests/")
                .next()
                .unwrap_or(&file)
                .to_string();
            format!(
                "{}  {} {} {}  {file}:{}",
                i.reference, i.object, i.role, i.container, i.line
            )
        })
        .collect()
}

fn error(text: &str) -> String {
    scan_text(text).unwrap_err().to_string()
}

const KSM: &str = "registry.k8s.io/kube-state-metrics/kube-state-metrics@sha256:ec5732e28f151de3847df60f48c5a570aacdb692ff1ce949d97105ae5e5a6722";

/// A folder of `helm template` output, a `kubectl get pods -o yaml` List and a JSON object: every
/// workload's containers, in file and document order, with where each was written.
#[test]
fn a_folder_of_rendered_manifests() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests");
    let scan = scan_paths(&[folder]).unwrap();
    assert_eq!(
        described(&scan),
        [
            "docker.io/library/nginx:1.25.3  Pod shop/web-7d4b9c8f5-x2k9p container nginx  kubectl-pods.yaml:16",
            "docker.io/library/busybox:1.36  Pod shop/web-7d4b9c8f5-x2k9p ephemeral container debugger-8xk2q  kubectl-pods.yaml:20",
            "registry.k8s.io/coredns/coredns:v1.10.1  Deployment kube-system/coredns container coredns  rendered/coredns.yaml:117",
            "docker.io/library/busybox:1.36  DaemonSet monitoring/node-exporter init container wait-for-kubelet  rendered/monitoring/exporters.yaml:20",
            "quay.io/prometheus/node-exporter:v1.7.0  DaemonSet monitoring/node-exporter container node-exporter  rendered/monitoring/exporters.yaml:24",
            "quay.io/brancz/kube-rbac-proxy:v0.15.0  DaemonSet monitoring/node-exporter container kube-rbac-proxy  rendered/monitoring/exporters.yaml:28",
            &format!("{KSM}  StatefulSet monitoring/kube-state-metrics container kube-state-metrics  rendered/monitoring/exporters.yaml:48"),
            &format!("{KSM}  StatefulSet monitoring/kube-state-metrics container kube-state-metrics-shard-1  rendered/monitoring/exporters.yaml:48"),
            "docker.io/bitnami/kubectl:1.28.3  CronJob monitoring/cleanup container cleanup  rendered/monitoring/exporters.yaml:70",
            "docker.io/grafana/grafana:10.2.3  Job monitoring/setup container setup  rendered/monitoring/exporters.yaml:87",
            "docker.io/library/busybox:1.36  Pod monitoring/monitoring-probe init container probe-node-exporter  rendered/monitoring/exporters.yaml:102",
            "docker.io/library/busybox:1.36  Pod monitoring/monitoring-probe container probe-kube-state-metrics  rendered/monitoring/exporters.yaml:102",
            "quay.io/shop/legacy-api:2.4.1  ReplicationController shop/legacy-api container api  replication.json:17",
        ]
    );
    assert_eq!(
        scan.images[3].document, 1,
        "the comment before the first --- is no document"
    );
    assert_eq!(scan.images[8].document, 3);
    assert_eq!(
        scan.passed_over.note().unwrap(),
        "passed over 7 objects of other kinds: Service 2, ClusterRole 1, ClusterRoleBinding 1, \
         ConfigMap 1, PodMonitor 1, ServiceAccount 1; passed over 1 file not named *.yaml, *.yml or *.json"
    );
}

#[test]
fn aliases_of_containers_and_lists_and_merges_of_several() {
    let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  initContainers: &inits
    - &base {name: base, image: "busybox:1", imagePullPolicy: Always}
  containers:
    - *base
    - <<: [{name: x, image: "from-first:1"}, *base]
      name: merged
    - {<<: *base, image: "own:2", name: own}
---
apiVersion: batch/v1
kind: Job
metadata: {name: j, namespace: n}
spec:
  template:
    spec:
      containers: &list [{name: a, image: "a:1"}]
      initContainers: *list
"#;
    let scan = scan_text(text).unwrap();
    let short: Vec<String> = scan
        .images
        .iter()
        .map(|i| format!("{} {} {}", i.role, i.container, i.reference))
        .collect();
    assert_eq!(
        short,
        [
            "init container base docker.io/library/busybox:1",
            "container base docker.io/library/busybox:1",
            "container merged docker.io/library/from-first:1",
            "container own docker.io/library/own:2",
            "init container a docker.io/library/a:1",
            "container a docker.io/library/a:1",
        ]
    );
}

/// `kubectl get deploy,cm -o json`: a List in JSON, items before its kind.
#[test]
fn a_json_list() {
    let text = r#"{
    "apiVersion": "v1",
    "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.25.3"}]}}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}, "data": {"image": "x:1"}}
    ],
    "kind": "List",
    "metadata": {"resourceVersion": ""}
}"#;
    let scan = scan_text(text).unwrap();
    assert_eq!(
        described(&scan),
        ["docker.io/library/nginx:1.25.3  Deployment shop/web container web  m.yaml:6"]
    );
    assert_eq!(
        scan.passed_over.objects,
        BTreeMap::from([("ConfigMap".into(), 1)])
    );
}

/// Only the kinds whose schema ferry knows are read; a kind of another API group, an object without a
/// kind and a document that is no object are counted, not guessed at.
#[test]
fn other_kinds_are_counted_not_guessed_at() {
    let text = "apiVersion: apps.example.com/v1\nkind: Deployment\nmetadata: {name: d}\n\
                spec: {template: {spec: {containers: [{name: c, image: 'x:1'}]}}}\n\
                ---\nimage: nginx:1\n---\n- a\n---\nkind: Deployment\n\
                spec: {template: {spec: {containers: [{name: c, image: 'x:1'}]}}}\n\
                ---\napiVersion: v1\nkind: Widget\nitems: [{apiVersion: v1, kind: Pod, spec: {}}]\n";
    let scan = scan_text(text).unwrap();
    assert!(scan.images.is_empty());
    assert_eq!(
        scan.passed_over.note().unwrap(),
        "passed over 5 objects of other kinds: (no kind) 1, (not an object) 1, \
         Deployment () 1, Deployment (apps.example.com/v1) 1, Widget 1"
    );
}

#[test]
fn a_container_without_a_usable_image_is_refused_naming_it() {
    let deployment = |containers: &str| {
        format!(
            "# Source: web/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\n\
             metadata:\n  name: web\n  namespace: shop\nspec:\n  template:\n    spec:\n\
             \x20     containers:\n{containers}"
        )
    };
    assert_eq!(
        error(&deployment("      - name: web\n        image: \"\"\n")),
        "m.yaml document 1, line 12: Deployment shop/web container web has no image"
    );
    assert_eq!(
        error(&deployment("      - name: web\n")),
        "m.yaml document 1, line 11: Deployment shop/web container web has no image"
    );
    assert_eq!(
        error(&deployment(
            "      - name: ok\n        image: nginx\n      - name: web\n        image: \"{{ .Values.image }}\"\n"
        )),
        "m.yaml document 1, line 14: Deployment shop/web container web: invalid image reference \
         '{{ .Values.image }}': repository path components must be lowercase [a-z0-9] separated by . _ __ or -"
    );
    assert_eq!(
        error("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n"),
        "m.yaml document 1, line 1: Deployment web has no containers in spec.template.spec.containers; \
         give ferry complete manifests (helm template, kustomize build), not patches"
    );
}

#[test]
fn broken_yaml_is_refused_with_its_place() {
    assert_eq!(
        error("kind: Pod\n---\nkind: Pod\nmetadata:\n  name: [a\n"),
        "m.yaml document 2, line 5: not valid YAML: unclosed bracket '[' (column 9)"
    );
    assert_eq!(
        error("kind: Pod\nspec: *nothing\n"),
        "m.yaml document 1, line 2: not valid YAML: while parsing node, found unknown anchor (column 7)"
    );
    let mut scan = Scan::default();
    let error = scan_reader(
        Cursor::new(b"kind: \xff\n".to_vec()),
        &Source::Stdin,
        &mut scan,
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "standard input document 1, line 1: it is not UTF-8 text"
    );
}

#[test]
fn hostile_yaml_is_refused_naming_the_document() {
    assert_eq!(
        error(&format!(
            "kind: Pod\n---\n{}",
            include_str!("../../../tests/fixtures/hostile/billion-laughs.yaml")
        )),
        "m.yaml document 2, line 14: its aliases expand to more than 1000000 nodes \
         (anchors that expand without bound)"
    );
    // 10,000 levels: block sequences on one line, then JSON arrays.
    assert_eq!(
        error(&format!("kind: Pod\nspec: {}", "{\"a\": ".repeat(10_000))),
        "m.yaml document 1, line 2: it nests deeper than 128 levels"
    );
    assert_eq!(
        error(&format!("spec:\n{}x\n", "- ".repeat(10_000))),
        "m.yaml document 1, line 2: it nests deeper than 128 levels"
    );
    assert_eq!(
        error(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
        "m.yaml document 1, line 1: it nests deeper than 128 levels"
    );
}

/// The reader's own bounds, at sizes a unit test can afford; the integration tests feed the real ones
/// 100 MB and watch ferry's memory.
#[test]
fn the_readers_bounds() {
    let small = Limits {
        object: 4096,
        // More than the scanner reads ahead (1024) to tell a key from a value.
        value: 2048,
        depth: 8,
        expansion: 100,
        anchored: 2048,
        kept: 3072,
    };
    let first_error = |text: String| {
        let mut reader = Reader::new(Cursor::new(text.into_bytes()), At::Document, small);
        loop {
            match reader.next_unit() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("read whole"),
                Err(error) => return (error.document, error.kind),
            }
        }
    };
    let entries: String = (0..1000).map(|i| format!("k{i}: v\n")).collect();
    let (document, kind) = first_error(format!("kind: A\n---\n{entries}"));
    assert_eq!(document, 2);
    assert!(
        matches!(kind, YamlErrorKind::ObjectTooLarge(4096)),
        "{kind}"
    );
    // A List larger than that is read, item by item, if no item is.
    let pods: String = (0..200)
        .map(|i| format!("- {{kind: Pod, metadata: {{name: p{i}}}}}\n"))
        .collect();
    let mut reader = Reader::new(
        Cursor::new(format!("apiVersion: v1\nitems:\n{pods}kind: List\n").into_bytes()),
        At::Document,
        small,
    );
    let mut units = 0;
    while reader.next_unit().unwrap().is_some() {
        units += 1;
    }
    assert_eq!(units, 201);
    let big_item = format!("- {{kind: Pod, data: [{}]}}\n", "abcdefgh, ".repeat(500));
    let (_, kind) = first_error(format!("items:\n{pods}{big_item}kind: List\n"));
    assert!(
        matches!(kind, YamlErrorKind::ObjectTooLarge(4096)),
        "{kind}"
    );
    // Many documents of which none is too large are read whole.
    let fine: String = (0..100).map(|i| format!("---\nk{i}: v\n")).collect();
    let mut reader = Reader::new(Cursor::new(fine.into_bytes()), At::Document, small);
    let mut documents = 0;
    while reader.next_unit().unwrap().is_some() {
        documents += 1;
    }
    assert_eq!(documents, 100);
    let (_, kind) = first_error(format!("kind: \"{}\"\n", "x".repeat(3000)));
    assert!(matches!(kind, YamlErrorKind::ValueTooLarge(2048)), "{kind}");
    let (_, kind) = first_error(format!("# {}\nkind: A\n", "x".repeat(3000)));
    assert!(matches!(kind, YamlErrorKind::ValueTooLarge(2048)), "{kind}");
    let (_, kind) = first_error(
        "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            .into(),
    );
    assert!(matches!(kind, YamlErrorKind::Expansion(100)), "{kind}");
    let (_, kind) = first_error(format!(
        "a: &a\n{}",
        "  - xxxxxxxxxxxxxxxxxxxx\n".repeat(40)
    ));
    assert!(matches!(kind, YamlErrorKind::Anchored(2048)), "{kind}");
    let containers = "  - {name: c, image: x}\n".repeat(60);
    let (_, kind) = first_error(format!("spec:\n containers:\n{containers}"));
    assert!(matches!(kind, YamlErrorKind::Kept(3072)), "{kind}");
    // What is not kept costs nothing: a large ConfigMap within the document bound is read.
    let data: String = (0..100).map(|i| format!("  key{i}: value\n")).collect();
    let mut reader = Reader::new(
        Cursor::new(format!("kind: ConfigMap\ndata:\n{data}").into_bytes()),
        At::Document,
        small,
    );
    assert!(reader.next_unit().unwrap().is_some());
}

/// Endless input stops at the first bound, and nothing more is read after it.
#[test]
fn endless_input_stops_at_a_bound() {
    struct Endless {
        line: &'static [u8],
        at: usize,
        read: std::rc::Rc<std::cell::Cell<u64>>,
    }
    impl std::io::Read for Endless {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            for byte in buffer.iter_mut() {
                *byte = self.line[self.at % self.line.len()];
                self.at += 1;
            }
            self.read.set(self.read.get() + buffer.len() as u64);
            Ok(buffer.len())
        }
    }
    let limits = Limits {
        object: 256 << 10,
        value: 64 << 10,
        ..Limits::MANIFESTS
    };
    for (line, bound) in [(&b"key: value\n"[..], limits.object), (b"x", limits.value)] {
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let endless = Endless {
            line,
            at: 0,
            read: read.clone(),
        };
        let mut reader = Reader::new(endless, At::Document, limits);
        let error = loop {
            match reader.next_unit() {
                Ok(_) => {}
                Err(error) => break error,
            }
        };
        assert!(
            matches!(
                error.kind,
                YamlErrorKind::ObjectTooLarge(_) | YamlErrorKind::ValueTooLarge(_)
            ),
            "{error}"
        );
        assert!(
            read.get() <= bound + (16 << 10),
            "{} bytes read for a bound of {bound}",
            read.get()
        );
        assert!(matches!(reader.next_unit(), Ok(None)));
    }
}
