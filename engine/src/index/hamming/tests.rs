use super::*;

fn unit_rows(n: usize, dims: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut v: Vec<f32> = (0..n * dims).map(|_| normal.sample(&mut rng)).collect();
    imgvec_ingest::l2_normalize_rows(&mut v, dims);
    v
}

#[test]
fn kernels_agree_with_naive() {
    for words in [1usize, 2, 3, 4] {
        let codes: Vec<u64> = (0..50 * words as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let q: Vec<u64> = (0..words as u64)
            .map(|i| !i.wrapping_mul(0x1234_5678_9ABC_DEF1))
            .collect();
        let mut got = vec![0u16; 50];
        distances(&codes, words, &q, &mut got);
        let mut portable = vec![0u16; 50];
        distances_portable(&codes, words, &q, &mut portable);
        for (row, (&g, &p)) in got.iter().zip(&portable).enumerate() {
            let naive: u32 = (0..words)
                .map(|w| (codes[row * words + w] ^ q[w]).count_ones())
                .sum();
            assert_eq!(
                (g as u32, p as u32),
                (naive, naive),
                "words {words} row {row}"
            );
        }
    }
}

#[test]
fn select_keeps_the_nearest_in_order() {
    let dist = [5u16, 1, 3, 3, 0, 7, 3];
    let got = select(&dist, 8, 4);
    assert_eq!(got, vec![(4, 0), (1, 1), (2, 3), (3, 3)]);
    assert_eq!(select(&dist, 8, 100).len(), 7);
}

/// ITQ codes preserve neighbourhoods better than the random-projection fallback, and the
/// affine map read back from FAISS reproduces FAISS's own transform.
#[test]
fn itq_beats_lsh_and_round_trips() {
    let dims = 64;
    let base = unit_rows(3000, dims, 1);
    let itq = Encoder::itq(dims, 32, &base).unwrap();
    let lsh = Encoder::lsh(dims, 32, &base, 9);
    let recall = |enc: &Encoder| {
        let mut idx = HammingIndex::new(enc.clone(), 3000);
        let ids: Vec<u64> = (1..=3000).collect();
        idx.add(&ids, &base);
        let mut hits = 0;
        for q in 0..100 {
            let v = &base[q * dims..(q + 1) * dims];
            let mut top = vec![crate::exact::TopK::new(2)];
            crate::exact::scan(&base, &ids, dims, v, &mut top, None);
            let exact = top.pop().unwrap().into_sorted();
            let found = idx.search(&idx.encode_one(v), 100);
            hits += found.iter().any(|(id, _)| *id == exact[1].0) as usize;
        }
        hits
    };
    let (ri, rl) = (recall(&itq), recall(&lsh));
    assert!(ri >= rl, "itq {ri} lsh {rl}");
    assert!(
        ri > 10,
        "itq finds the nearest neighbour in its top 100 too rarely: {ri}/100"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut idx = HammingIndex::new(itq, 3000);
    idx.add(&(1..=3000).collect::<Vec<_>>(), &base);
    let path = dir.path().join("h.ivh");
    idx.save(&path).unwrap();
    let back = HammingIndex::load(&path).unwrap();
    assert_eq!(back.codes(), idx.codes());
    assert_eq!(back.ids(), idx.ids());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(HammingIndex::load(&path).is_err());
}
