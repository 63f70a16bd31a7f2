//! SIFT extraction (detection and RootSIFT description) per photo, one thread, on the first
//! `IMGVEC_BENCH_N` (default 24) photos of distractors-imagenet-1k and of holidays-dev/db (their
//! sizes are what ingest meets: about 500 px, and 325 px that SIFT doubles). Beside it, the
//! decode of the same files, as the baseline every ingest pays.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use imgvec_ingest::sift::{extract, SiftParams};

fn photos(folder: &str, n: usize) -> Vec<PathBuf> {
    let dir = imgvec_testkit::datasets().join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| imgvec_ingest::has_image_extension(p))
        .collect();
    files.sort();
    files.truncate(n);
    files
}

fn sift(c: &mut Criterion) {
    let n: usize = std::env::var("IMGVEC_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let params = SiftParams::default();
    let mut group = c.benchmark_group("sift");
    group.sample_size(10);
    for folder in ["distractors-imagenet-1k", "holidays-dev/db"] {
        let bytes: Vec<Vec<u8>> = photos(folder, n)
            .iter()
            .map(|p| std::fs::read(p).expect("a readable photo"))
            .collect();
        let decode = |b: &Vec<u8>| imgvec_ingest::decode(b).expect("a decodable photo").rgb;
        let images: Vec<_> = bytes.iter().map(decode).collect();
        group.throughput(Throughput::Elements(images.len() as u64));
        group.bench_with_input(BenchmarkId::new("decode", folder), &bytes, |b, bytes| {
            b.iter(|| bytes.iter().map(|b| decode(b).width()).sum::<u32>())
        });
        group.bench_with_input(BenchmarkId::new("extract", folder), &images, |b, images| {
            b.iter(|| {
                images
                    .iter()
                    .map(|i| extract(i, &params).len())
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sift);
criterion_main!(benches);
