//! Seeds a registry and a vendor directory with images shaped like Huawei CSI 4.8.0 for Kubernetes 1.28, for
//! `examples/bench.sh`. Uses the integration tests' seeder (the registry's HTTP API, never ferry's push).
//!
//! Usage: bench_seed REGISTRY_ADDR VENDOR_DIR PUBLIC_BYTES VENDOR_BYTES
//!        (also writes the vendor's arm64 package into VENDOR_DIR-arm64, for the two-platform bundle)
//!        bench_seed big REGISTRY_ADDR BYTES      (one single-platform image, bench/big:v1)

#[path = "../tests/it/seed.rs"]
#[allow(dead_code)]
mod seed;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, big, addr, bytes] = args.as_slice() {
        assert_eq!(big, "big", "usage: bench_seed big REGISTRY_ADDR BYTES");
        let seeded = seed::push_image(
            addr,
            "bench/big",
            "v1",
            seed::Format::DockerSingle,
            &["linux/amd64"],
            bytes.parse().expect("a byte count"),
        );
        println!("registry.k8s.io/bench/big:v1 {}", seeded.top_digest);
        return;
    }
    let [_, addr, vendor_dir, public, vendor] = args.as_slice() else {
        eprintln!("usage: bench_seed REGISTRY_ADDR VENDOR_DIR PUBLIC_BYTES VENDOR_BYTES");
        std::process::exit(2);
    };
    let (public, vendor): (usize, usize) = (
        public.parse().expect("a byte count"),
        vendor.parse().expect("a byte count"),
    );
    for (upstream, seeded) in seed::seed_csi_480(addr, public) {
        println!("{upstream} {}", seeded.manifest_for("linux/amd64"));
    }
    let dir = std::path::Path::new(vendor_dir);
    std::fs::create_dir_all(dir).expect("vendor dir");
    seed::vendor_dir_480(dir, vendor);
    let arm64 = std::path::PathBuf::from(format!("{vendor_dir}-arm64"));
    std::fs::create_dir_all(&arm64).expect("vendor dir");
    seed::vendor_dir_480_for(&arm64, vendor, "linux/arm64");
}
