//! ferry on the air-gapped side: the static binaries `scripts/release.sh` builds (tests/run-all.sh builds
//! them before the tests when what decides how they build changed; else these tests are listed as
//! skipped), used as an operator on an old x86_64 or an arm64 machine uses them. Each is statically
//! linked, names its version, commit and catalogs, verifies a two-platform bundle, serves it over TLS and
//! pushes it to a TLS registry; the arm64 one runs under qemu-aarch64-static. The release archives are
//! checked the way the README tells: `sha256sum -c` and `ssh-keygen -Y verify`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::ferry::{command, ferry, run, Run};
use crate::formats::copy_as_zstd;
use crate::seed::{push_image, Format, Seeded};
use crate::serve::{digest_of, text, Served};
use crate::services::{make_certificates, record_skip, require, Registry};

const TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

/// The cargo target directory the test binary was built in.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A static binary as release.sh built it, and how to run it here: natively, or under qemu-user.
struct StaticFerry {
    path: PathBuf,
    emulator: Option<&'static str>,
}

impl StaticFerry {
    /// The binary for `target`, or `None` when this test does not run: tests/run-all.sh left the static
    /// binaries unbuilt on purpose (FERRY_STATIC_NOT_BUILT says why), or one is missing and
    /// FERRY_ALLOW_SKIP=1 allows that.
    fn for_test(target: &'static str) -> Option<StaticFerry> {
        if let Ok(why) = std::env::var("FERRY_STATIC_NOT_BUILT") {
            record_skip(&why);
            return None;
        }
        require(StaticFerry::built(target))
    }

    /// The binary for `target`; missing (or missing its emulator) is a service that cannot start.
    fn built(target: &'static str) -> Result<StaticFerry, String> {
        let path = target_dir().join(target).join("release/ferry");
        if !path.is_file() {
            return Err(format!(
                "{} is not built: run scripts/release.sh (tests/run-all.sh does)",
                path.display()
            ));
        }
        let emulator = match target.split('-').next() {
            Some(arch) if arch == std::env::consts::ARCH => None,
            Some("aarch64") => Some("qemu-aarch64-static"),
            Some("x86_64") => Some("qemu-x86_64-static"),
            _ => return Err(format!("no emulator known for {target}")),
        };
        if let Some(emulator) = emulator {
            if Command::new(emulator).arg("--version").output().is_err() {
                return Err(format!(
                    "{emulator} is missing (Debian's qemu-user-static; .ci/install-deps.sh installs it)"
                ));
            }
        }
        let built = StaticFerry { path, emulator };
        // A binary built from other sources than the one under test would prove nothing about them.
        let version = |run: Run| run.success().stdout();
        assert_eq!(
            version(built.run(&["--version"])),
            version(ferry(&["--version"])),
            "{target}: the static binary is not built from this checkout; rebuild it with scripts/release.sh"
        );
        Ok(built)
    }

    fn command(&self) -> Command {
        match self.emulator {
            Some(emulator) => {
                let mut command = Command::new(emulator);
                command.arg(&self.path);
                command
            }
            None => Command::new(&self.path),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        run(self.command().args(args))
    }
}

fn tool(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

#[test]
fn each_static_binary_has_no_dynamic_section_and_names_its_commit_and_catalogs() {
    for target in TARGETS {
        let Some(static_ferry) = StaticFerry::for_test(target) else {
            return;
        };
        let path = static_ferry.path.to_str().unwrap();
        let file = text(&tool("file", &["-b", path]));
        let arch = if target.starts_with("x86_64") {
            "x86-64"
        } else {
            "ARM aarch64"
        };
        assert!(
            file.starts_with(&format!("ELF 64-bit LSB executable, {arch},"))
                && file.contains(", statically linked,"),
            "{target}: {file}"
        );
        let ldd = tool("ldd", &[path]);
        assert_eq!(text(&ldd).trim(), "not a dynamic executable", "{target}");
        // No dynamic symbols at all, so none asks for a glibc newer than RHEL 7's 2.17.
        let objdump = tool("objdump", &["-T", path]);
        assert!(
            text(&objdump).contains("not a dynamic object") && !text(&objdump).contains("GLIBC_"),
            "{target}: {}",
            text(&objdump)
        );
    }
    // What --version says, checked once: the static binaries say the same (StaticFerry::built).
    let version = ferry(&["--version"]).success().stdout();
    let commit = tool(
        "git",
        &[
            "-C",
            repository().to_str().unwrap(),
            "log",
            "-1",
            "--format=%h %cs",
            "--abbrev=12",
        ],
    );
    assert!(commit.status.success(), "{}", text(&commit));
    let newest: Vec<String> = ferry(&["catalogs", "--json"])
        .success()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|release| release["default"] == true)
        .map(|release| {
            format!(
                "{}@{}",
                release["catalog"].as_str().unwrap(),
                release["release"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        newest.iter().any(|r| r.starts_with("huawei-csi@")),
        "{newest:?}"
    );
    assert_eq!(
        version,
        format!(
            "ferry {} ({})\nnewest catalog releases: {}\n",
            env!("CARGO_PKG_VERSION"),
            String::from_utf8_lossy(&commit.stdout).trim(),
            newest.join(", ")
        )
    );
    assert_eq!(
        ferry(&["-V"]).success().stdout(),
        format!("ferry {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// A registry holding two images for amd64 and arm64 (one with zstd layers), and the two-platform
/// bundle the ferry under test makes of them.
struct TwoPlatforms {
    _registry: Registry,
    app: Seeded,
    work: tempfile::TempDir,
    bundle: PathBuf,
}

impl TwoPlatforms {
    fn bundle() -> Option<TwoPlatforms> {
        let registry = require(Registry::plain())?;
        let platforms = ["linux/amd64", "linux/arm64"];
        let app = push_image(
            registry.addr(),
            "csi/app",
            "v1",
            Format::OciIndex,
            &platforms,
            300_000,
        );
        push_image(
            registry.addr(),
            "csi/sidecar",
            "v2",
            Format::DockerList,
            &platforms,
            200_000,
        );
        // zstd layers: libzstd, one of the two C libraries in the binary, decompresses them (--deep).
        copy_as_zstd(
            &format!("docker://{}/csi/app:v1", registry.addr()),
            &format!("docker://{}/csi/zstd:v1", registry.addr()),
            &["--all"],
        );
        let work = tempfile::tempdir().unwrap();
        let bundle = work.path().join("two.tar");
        let images = ["csi/app:v1", "csi/sidecar:v2", "csi/zstd:v1"];
        let mut args = vec!["bundle".to_string()];
        for image in images {
            args.extend([
                "--image".to_string(),
                format!("{}/{image}", registry.addr()),
            ]);
        }
        args.extend(
            [
                "--platform",
                "linux/amd64,linux/arm64",
                "--cache-dir",
                work.path().join("cache").to_str().unwrap(),
                "-o",
                bundle.to_str().unwrap(),
                "-q",
            ]
            .map(String::from),
        );
        run(command().args(&args)).success();
        Some(TwoPlatforms {
            _registry: registry,
            app,
            work,
            bundle,
        })
    }
}

#[test]
fn each_static_binary_verifies_serves_and_pushes_a_two_platform_bundle() {
    let Some(two) = TwoPlatforms::bundle() else {
        return;
    };
    let Some(private) = require(Registry::tls_with_auth("ferry", "s3cret-Pa55")) else {
        return;
    };
    let bundle = two.bundle.to_str().unwrap();
    let at = |name: &str| two.work.path().join(name).display().to_string();
    make_certificates(two.work.path()).unwrap();
    // What the ferry under test says of the bundle; the static binaries must say the same, byte for byte.
    let verified = ferry(&["verify", bundle, "--deep"]).success().stdout();
    let summary = verified.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("intact: 3 images for linux/amd64, linux/arm64 (6 manifests), ")
            && summary.ends_with("; every byte checked"),
        "{verified}"
    );
    for target in TARGETS {
        let Some(static_ferry) = StaticFerry::for_test(target) else {
            return;
        };
        assert_eq!(
            static_ferry
                .run(&["verify", bundle, "--deep"])
                .success()
                .stdout(),
            verified,
            "{target}"
        );

        // Serve over TLS (rustls on aws-lc, the other C library): /v2/ answers, and the arm64 manifest
        // comes back with its upstream digest.
        let served = Served::start_with(
            static_ferry.command(),
            &[
                bundle,
                "--tls-cert",
                &at("server.pem"),
                "--tls-key",
                &at("server.key"),
            ],
            two.work.path().join(format!("serve-{target}.log")),
        );
        let base = tool(
            "curl",
            &[
                "-sS",
                "--cacert",
                &at("ca.pem"),
                "-D",
                "-",
                "-o",
                "/dev/null",
                &format!("https://{}/v2/", served.addr),
            ],
        );
        // HTTP/2 where curl offers it (ALPN), as containerd does; the status and the API header matter.
        let head = text(&base).to_ascii_lowercase();
        assert!(
            head.split_whitespace().nth(1) == Some("200")
                && head.contains("\r\ndocker-distribution-api-version: registry/2.0\r\n"),
            "{target}: {head}"
        );
        let arm64 = two.app.manifest_for("linux/arm64");
        let manifest = tool(
            "curl",
            &[
                "-sS",
                "--fail",
                "--cacert",
                &at("ca.pem"),
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
                &format!("https://{}/v2/csi/app/manifests/{arm64}", served.addr),
            ],
        );
        assert!(manifest.status.success(), "{target}: {}", text(&manifest));
        assert_eq!(digest_of(&manifest.stdout), arm64, "{target}");
        drop(served);

        // Push to a private registry over TLS with basic auth, as on a site without ferry serve.
        let to = format!("{}/{}", private.addr(), target.split('-').next().unwrap());
        let pushed = run(static_ferry
            .command()
            .args(["push", bundle, "--to", &to, "-q", "--ca-cert"])
            .arg(private.ca_cert())
            .env("DOCKER_CONFIG", private.docker_config()))
        .success();
        assert_eq!(
            pushed
                .stdout()
                .lines()
                .filter(|l| l.contains(" -> "))
                .count(),
            3,
            "{target}: {}",
            pushed.stdout()
        );
        let pulled = tool(
            "curl",
            &[
                "-sS",
                "--fail",
                "--cacert",
                private.ca_cert().to_str().unwrap(),
                "-u",
                &format!("ferry:{}", private.password()),
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
                &format!(
                    "https://{}/v2/{}/csi/app/manifests/{arm64}",
                    private.addr(),
                    target.split('-').next().unwrap()
                ),
            ],
        );
        assert!(pulled.status.success(), "{target}: {}", text(&pulled));
        assert_eq!(digest_of(&pulled.stdout), arm64, "{target}");
    }
}

/// The files of an unpacked archive, relative to its top directory, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    files
}

/// The subcommands `ferry --help` lists.
fn subcommands() -> Vec<String> {
    let help = ferry(&["--help"]).success().stdout();
    let listed = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_else(|| panic!("no Commands: in\n{help}"));
    // A command's line is indented two spaces; its wrapped description, more.
    listed
        .lines()
        .filter(|line| !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

#[test]
fn release_archives_check_with_sha256sum_and_ssh_keygen_and_hold_completions_and_man_pages() {
    for target in TARGETS {
        if StaticFerry::for_test(target).is_none() {
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let at = |name: &str| work.path().join(name);
    let key = at("release_key");
    let keygen = tool(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "release@ferry",
            "-f",
            key.to_str().unwrap(),
        ],
    );
    assert!(keygen.status.success(), "{}", text(&keygen));
    let public_key = std::fs::read_to_string(at("release_key.pub")).unwrap();
    std::fs::write(at("allowed_signers"), format!("release@ferry {public_key}")).unwrap();
    // Called from elsewhere, with the key and the output directory named relative to there.
    let release = |out: &str| {
        let built = Command::new("bash")
            .arg(repository().join("scripts/release.sh"))
            .args(["--no-build", "--sign", "release_key", "--out", out])
            .current_dir(work.path())
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .unwrap();
        assert!(built.status.success(), "{}", text(&built));
        at(out)
    };
    let dist = release("dist");
    let version = env!("CARGO_PKG_VERSION");
    let archive = |target: &str| format!("ferry-{version}-{target}.tar.gz");

    // Beside the archives: one list over them, signed. The far side checks the archive it carried.
    let in_dir = |dir: &Path, program: &str, args: &[&str], stdin: Option<&Path>| {
        let mut command = Command::new(program);
        command.args(args).current_dir(dir);
        if let Some(file) = stdin {
            command.stdin(std::fs::File::open(file).unwrap());
        }
        command.output().unwrap()
    };
    let sums = in_dir(&dist, "sha256sum", &["-c", "SHA256SUMS"], None);
    assert_eq!(
        text(&sums),
        format!("{}: OK\n{}: OK\n", archive(TARGETS[0]), archive(TARGETS[1]))
    );
    let verify_signature = |dir: &Path, namespace: &str| {
        in_dir(
            dir,
            "ssh-keygen",
            &[
                "-Y",
                "verify",
                "-f",
                at("allowed_signers").to_str().unwrap(),
                "-I",
                "release@ferry",
                "-n",
                namespace,
                "-s",
                "SHA256SUMS.sig",
            ],
            Some(&dir.join("SHA256SUMS")),
        )
    };
    let fingerprint = text(&tool(
        "ssh-keygen",
        &["-l", "-f", at("release_key.pub").to_str().unwrap()],
    ));
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();
    let good = format!(
        "Good \"ferry-release\" signature for release@ferry with ED25519 key {fingerprint}\n"
    );
    assert_eq!(text(&verify_signature(&dist, "ferry-release")), good);
    // A release signature is not a bundle's (-n ferry), nor the reverse.
    assert!(!verify_signature(&dist, "ferry").status.success());

    let manpages: Vec<String> = std::iter::once("man/man1/ferry.1".to_string())
        .chain(
            subcommands()
                .iter()
                .map(|name| format!("man/man1/ferry-{name}.1")),
        )
        .collect();
    for target in TARGETS {
        let unpacked = at(&format!("unpacked-{target}"));
        std::fs::create_dir(&unpacked).unwrap();
        let untar = tool(
            "tar",
            &[
                "-xzf",
                dist.join(archive(target)).to_str().unwrap(),
                "-C",
                unpacked.to_str().unwrap(),
            ],
        );
        assert!(untar.status.success(), "{}", text(&untar));
        let top = unpacked.join(format!("ferry-{version}-{target}"));
        let mut expected: Vec<String> = [
            "README.md",
            "SHA256SUMS",
            "SHA256SUMS.sig",
            "completions/_ferry",
            "completions/_ferry.ps1",
            "completions/ferry.bash",
            "completions/ferry.fish",
            "ferry",
        ]
        .map(String::from)
        .into_iter()
        .chain(manpages.iter().cloned())
        .collect();
        expected.sort();
        assert_eq!(files_under(&top), expected, "{target}");

        assert_eq!(
            text(&verify_signature(&top, "ferry-release")),
            good,
            "{target}"
        );
        let sums = in_dir(&top, "sha256sum", &["-c", "SHA256SUMS"], None);
        let checked: Vec<String> = expected
            .iter()
            .filter(|name| !name.starts_with("SHA256SUMS"))
            .map(|name| format!("{name}: OK"))
            .collect();
        assert_eq!(text(&sums), checked.join("\n") + "\n", "{target}");

        // The archive carries the very binary built, and what this checkout's --help would generate.
        assert_eq!(
            std::fs::read(top.join("ferry")).unwrap(),
            std::fs::read(target_dir().join(target).join("release/ferry")).unwrap(),
            "{target}"
        );
        assert_eq!(
            std::fs::read(top.join("README.md")).unwrap(),
            std::fs::read(repository().join("README.md")).unwrap()
        );
        for (shell, file) in [
            ("bash", "ferry.bash"),
            ("zsh", "_ferry"),
            ("fish", "ferry.fish"),
            ("powershell", "_ferry.ps1"),
        ] {
            assert_eq!(
                String::from_utf8(std::fs::read(top.join("completions").join(file)).unwrap())
                    .unwrap(),
                ferry(&["completions", shell]).success().stdout(),
                "{target} {file}"
            );
        }
        let sourced = tool(
            "bash",
            &[
                "-c",
                &format!(
                    "source {}/completions/ferry.bash && complete -p ferry",
                    top.display()
                ),
            ],
        );
        assert_eq!(
            text(&sourced),
            "complete -o bashdefault -o default -o nosort -F _ferry ferry\n"
        );
        let verify_page = std::fs::read_to_string(top.join("man/man1/ferry-verify.1")).unwrap();
        assert!(verify_page.contains(".TH ferry-verify 1 "), "{verify_page}");
        assert!(verify_page.contains("\\-\\-deep"), "{verify_page}");

        // A flipped byte in the binary fails sha256sum -c; a list rewritten to match fails the signature.
        let binary = top.join("ferry");
        let mut bytes = std::fs::read(&binary).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&binary, &bytes).unwrap();
        let sums = in_dir(&top, "sha256sum", &["-c", "--quiet", "SHA256SUMS"], None);
        assert_eq!(
            text(&sums),
            "ferry: FAILED\nsha256sum: WARNING: 1 computed checksum did NOT match\n",
            "{target}"
        );
        let list = std::fs::read_to_string(top.join("SHA256SUMS")).unwrap();
        let forged: String = list
            .lines()
            .map(|line| match line.strip_suffix("  ferry") {
                Some(_) => format!(
                    "{}  ferry\n",
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
                ),
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(top.join("SHA256SUMS"), forged).unwrap();
        assert!(
            in_dir(&top, "sha256sum", &["-c", "--quiet", "SHA256SUMS"], None)
                .status
                .success()
        );
        let refused = verify_signature(&top, "ferry-release");
        assert!(!refused.status.success(), "{target}: {}", text(&refused));
        assert!(
            text(&refused).contains("Signature verification failed"),
            "{target}: {}",
            text(&refused)
        );
    }

    // The same binaries and key give the same archives, byte for byte.
    let again = release("again");
    for target in TARGETS {
        assert_eq!(
            std::fs::read(dist.join(archive(target))).unwrap(),
            std::fs::read(again.join(archive(target))).unwrap(),
            "{target}"
        );
    }
}

#[test]
fn man_pages_replace_what_is_in_their_place_and_completions_survive_a_closed_pipe() {
    let work = tempfile::tempdir().unwrap();
    let pages = work.path().join("man1");
    std::fs::create_dir(&pages).unwrap();
    // A symlink where a page goes is replaced, never written through.
    let elsewhere = work.path().join("elsewhere");
    std::fs::write(&elsewhere, "not a man page\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, pages.join("ferry-verify.1")).unwrap();
    let written = ferry(&["manpages", pages.to_str().unwrap()]).success();
    // Every subcommand, by name: a reading of --help that lost one would pass unnoticed otherwise.
    assert_eq!(
        subcommands(),
        [
            "catalogs",
            "list",
            "diff",
            "pull",
            "bundle",
            "verify",
            "inspect",
            "merge",
            "repair",
            "push",
            "load",
            "serve",
            "completions",
            "manpages"
        ]
    );
    let expected: Vec<String> = std::iter::once("ferry.1".to_string())
        .chain(subcommands().iter().map(|name| format!("ferry-{name}.1")))
        .map(|name| format!("{}\n", pages.join(name).display()))
        .collect();
    assert_eq!(written.stdout(), expected.concat());
    assert_eq!(
        std::fs::read_to_string(&elsewhere).unwrap(),
        "not a man page\n"
    );
    let page = pages.join("ferry-verify.1");
    assert!(std::fs::symlink_metadata(&page).unwrap().is_file());
    assert!(std::fs::read_to_string(&page)
        .unwrap()
        .contains(".TH ferry-verify 1 "));
    // A file where the directory should be is named.
    let refused = ferry(&["manpages", elsewhere.to_str().unwrap()]).fails_with(1);
    assert_eq!(
        refused.stderr(),
        format!(
            "error: cannot create {}\n  caused by: File exists (os error 17)\n",
            elsewhere.display()
        )
    );

    // A reader that is gone before ferry writes (`| head -1` on a long script): no panic, exit 0 as for
    // every command.
    let closed = Command::new("bash")
        .args([
            "-c",
            &format!(
                "{{ sleep 0.3; {} completions bash; }} | true; exit ${{PIPESTATUS[0]}}",
                env!("CARGO_BIN_EXE_ferry")
            ),
        ])
        .output()
        .unwrap();
    assert!(
        closed.status.success(),
        "{:?} {}",
        closed.status,
        text(&closed)
    );
    assert_eq!(text(&closed), "");
    let unknown = ferry(&["completions", "tcsh"]).fails_with(2);
    assert!(
        unknown.stderr().starts_with(
            "error: invalid value 'tcsh' for '<SHELL>'\n  [possible values: bash, elvish, fish, powershell, zsh]\n"
        ),
        "{}",
        unknown.stderr()
    );
}
