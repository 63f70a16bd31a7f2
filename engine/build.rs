//! Compiles engine/cpp/faiss_lists.cpp (inverted lists FAISS searches where they lie, in a
//! mapped file) against the FAISS sources faiss-sys builds from, with the same compiler flags.

use std::path::{Path, PathBuf};

/// The version of faiss-sys in the workspace's Cargo.lock.
fn locked_faiss_sys(lock: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"faiss-sys\"" {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_string());
        }
    }
    None
}

/// The FAISS source folder (holding `faiss/IndexIVF.h`) of faiss-sys `version`:
/// `IMGVEC_FAISS_INCLUDE`, else the crate's unpacked source in Cargo's registry.
fn faiss_include(version: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("IMGVEC_FAISS_INCLUDE") {
        return dir.into();
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let registry = cargo_home.join("registry").join("src");
    let found = std::fs::read_dir(&registry)
        .into_iter()
        .flatten()
        .flatten()
        .map(|index| {
            index
                .path()
                .join(format!("faiss-sys-{version}"))
                .join("faiss")
        })
        .find(|dir| dir.join("faiss").join("IndexIVF.h").is_file());
    found.unwrap_or_else(|| {
        panic!(
            "FAISS headers of faiss-sys {version} not found under {}: set IMGVEC_FAISS_INCLUDE \
             to the folder holding faiss/IndexIVF.h",
            registry.display()
        )
    })
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let lock_path = manifest.join("..").join("Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    let version = locked_faiss_sys(&lock).unwrap_or_else(|| "0.7.0".to_string());
    let source = manifest.join("cpp").join("faiss_lists.cpp");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        // FAISS's own headers as system headers: their warnings are not ours.
        .flag("-isystem")
        .flag(faiss_include(&version).to_str().expect("a UTF-8 path"))
        .file(&source)
        .warnings(true)
        .compile("imgvec_faiss_lists");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed={}", lock_path.display());
    println!("cargo:rerun-if-env-changed=IMGVEC_FAISS_INCLUDE");
}
