//! The kernels embedded by `build.rs`: every `kernels/*.cu` file is in the
//! binary, every kernel the backend launches is defined in it, and with nvcc
//! at build time each file has a fatbin for every architecture.
//!
//! `DENSETRAIN_REQUIRE_FATBIN=1` (set by `.ci/run` after it installs nvcc)
//! makes a missing fatbin a failure; otherwise its absence is printed.

use densetrain::backend::cuda::kernels::KERNEL_NAMES;
use densetrain::backend::cuda::loader::{FATBIN_ARCHS, KERNEL_FILES, KERNEL_HEADERS, embedded_fit};
use std::path::Path;

#[test]
fn every_kernel_file_embedded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "cu").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    on_disk.sort();
    let embedded: Vec<String> = KERNEL_FILES.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(embedded, on_disk);
    for file in KERNEL_FILES {
        let text = std::fs::read_to_string(dir.join(format!("{}.cu", file.name))).unwrap();
        assert_eq!(
            file.source, text,
            "{}.cu is embedded out of date",
            file.name
        );
        assert!(
            !file.source.contains("#include <"),
            "{}.cu includes a system header",
            file.name
        );
    }
    assert!(KERNEL_HEADERS.iter().any(|(name, _)| *name == "common.cuh"));
}

#[test]
fn every_launched_kernel_defined() {
    for (file, kernels) in KERNEL_NAMES {
        let source = KERNEL_FILES
            .iter()
            .find(|f| f.name == *file)
            .unwrap_or_else(|| panic!("{file}.cu is not embedded"))
            .source;
        for kernel in *kernels {
            let definition = format!("extern \"C\" __global__ void {kernel}(");
            assert!(
                source.contains(&definition),
                "{file}.cu does not define {kernel}"
            );
        }
    }
}

#[test]
fn fatbins_cover_every_architecture() {
    let required = std::env::var("DENSETRAIN_REQUIRE_FATBIN").is_ok_and(|v| v == "1");
    if KERNEL_FILES.iter().all(|f| f.fatbin.is_none()) {
        assert!(
            !required,
            "DENSETRAIN_REQUIRE_FATBIN=1, but build.rs embedded no fatbin"
        );
        eprintln!("fatbins_cover_every_architecture: skipped, nvcc was not found at build time");
        assert!(FATBIN_ARCHS.is_empty());
        return;
    }
    if required {
        assert_eq!(FATBIN_ARCHS, &[75, 80, 86, 89, 90]);
    }
    for file in KERNEL_FILES {
        let fatbin = file
            .fatbin
            .unwrap_or_else(|| panic!("{}.cu has no fatbin", file.name));
        // A fatbin starts with the magic number 0xBA55ED50, little-endian.
        assert_eq!(
            &fatbin[..4],
            &[0x50, 0xED, 0x55, 0xBA],
            "{}: not a fatbin",
            file.name
        );
    }
    for (cc, expected) in [
        ((9, 0), "sm_90"),
        ((8, 6), "sm_86"),
        ((8, 7), "sm_86 (compatible"),
    ] {
        let fit = embedded_fit(cc);
        if required {
            assert!(fit.contains(expected), "{cc:?}: {fit}");
        }
    }
    assert!(
        embedded_fit((10, 0)).contains("PTX"),
        "{}",
        embedded_fit((10, 0))
    );
}
