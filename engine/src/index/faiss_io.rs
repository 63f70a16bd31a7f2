//! How imgvec calls FAISS through its C API: error codes, one search call that takes the index
//! by shared reference (FAISS's CPU `search` is const and thread-safe; per-call settings travel
//! in a parameter object), and (de)serialisation of indexes in memory (no temporary files: a
//! read-only handle must not write into the database folder).

use crate::error::IndexError;

/// The compiler flags FAISS was built with on x86_64 (.cargo/config.toml): `-mavx2 -mfma
/// -mf16c -mpopcnt` selects its AVX2 kernels (the PQ fast-scan that voting and IVF-PQ search
/// run on is otherwise emulated with scalars, several times slower).
const FAISS_X86_FLAGS: Option<&str> = option_env!("CXXFLAGS_x86_64_unknown_linux_gnu");

/// The instruction sets named by `-m` flags in `flags` that `has` says are missing.
fn missing_features(flags: &str, has: impl Fn(&str) -> bool) -> Vec<&str> {
    flags
        .split_whitespace()
        .filter_map(|f| f.strip_prefix("-m"))
        .filter(|f| !has(f))
        .collect()
}

/// Whether this CPU runs the FAISS this build links: an error naming what it lacks, where
/// searching would otherwise stop the process on an illegal instruction.
pub(crate) fn check_cpu() -> Result<(), IndexError> {
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: &str| match f {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            "popcnt" => std::arch::is_x86_feature_detected!("popcnt"),
            _ => true,
        };
        let missing = missing_features(FAISS_X86_FLAGS.unwrap_or(""), has);
        if !missing.is_empty() {
            return Err(IndexError::Invalid(format!(
                "this build's FAISS uses {} instructions, which this CPU lacks: set \
                 CXXFLAGS_x86_64_unknown_linux_gnu to \"\" in .cargo/config.toml (FAISS's \
                 generic kernels), run scripts/setup.sh (it makes the next build recompile \
                 FAISS) and rebuild",
                missing.join(", ")
            )));
        }
    }
    Ok(())
}

pub(crate) fn faiss_call(what: &'static str, code: i32) -> Result<(), IndexError> {
    if code == 0 {
        Ok(())
    } else {
        Err(IndexError::FaissCode { what, code })
    }
}

/// Serialises a FAISS object into memory through `open_memstream` (no temporary file: a
/// read-only handle must not write into the database folder).
pub(crate) fn faiss_write_mem(
    what: &'static str,
    write: impl FnOnce(*mut faiss_sys::FILE) -> i32,
) -> Result<Vec<u8>, IndexError> {
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: open_memstream owns `buf` until fclose, after which `buf[..len]` is valid until
    // freed here; `write` only writes to the stream it is given.
    unsafe {
        let f = libc::open_memstream(&mut buf, &mut len);
        if f.is_null() {
            return Err(std::io::Error::last_os_error().into());
        }
        let code = write(f.cast());
        let closed = libc::fclose(f);
        let out = if buf.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(buf as *const u8, len).to_vec()
        };
        libc::free(buf.cast());
        faiss_call(what, code)?;
        if closed != 0 {
            return Err(IndexError::Invalid(format!("{what}: stream close failed")));
        }
        Ok(out)
    }
}

/// Reads a FAISS object from memory through `fmemopen`.
pub(crate) fn faiss_read_mem(
    what: &'static str,
    bytes: &[u8],
    read: impl FnOnce(*mut faiss_sys::FILE) -> i32,
) -> Result<(), IndexError> {
    if bytes.is_empty() {
        return Err(IndexError::Invalid(format!("{what}: no data")));
    }
    // SAFETY: the stream reads `bytes` (mode "rb" never writes to the buffer) and is closed
    // before this borrow ends.
    unsafe {
        let f = libc::fmemopen(
            bytes.as_ptr() as *mut libc::c_void,
            bytes.len(),
            c"rb".as_ptr(),
        );
        if f.is_null() {
            return Err(std::io::Error::last_os_error().into());
        }
        let code = read(f.cast());
        libc::fclose(f);
        faiss_call(what, code)
    }
}

/// Searches `index` for the `k` nearest of each of the `queries` (`nq` rows), probing `nprobe`
/// lists (`None`: an index without lists). FAISS's `search` is const and thread-safe on CPU
/// indexes, so this takes `&` (see `ivfpq`'s module docs); per-call settings travel in a
/// parameter object the call owns. Returns (distances, labels), `nq × k` each; label −1: none.
pub(crate) fn faiss_search(
    what: &'static str,
    index: &faiss::index::IndexImpl,
    queries: &[f32],
    nq: usize,
    k: usize,
    nprobe: Option<usize>,
) -> Result<(Vec<f32>, Vec<i64>), IndexError> {
    use faiss::Index;
    let mut dis = vec![0f32; nq * k];
    let mut lab = vec![-1i64; nq * k];
    let mut params = faiss::search_params::SearchParametersIVF::new()?;
    let params_ptr = match nprobe {
        Some(n) => {
            params.set_nprobe(n);
            params.inner_ptr()
        }
        None => std::ptr::null_mut(),
    };
    debug_assert!(queries.len() >= nq * index.d() as usize);
    // SAFETY: the index is live for the borrow; FAISS's search is const and writes only the two
    // output buffers (`nq * k` each); `params` outlives the call (null: none).
    faiss_call(what, unsafe {
        faiss_sys::faiss_Index_search_with_params(
            index.inner_ptr(),
            nq as i64,
            queries.as_ptr(),
            k as i64,
            params_ptr,
            dis.as_mut_ptr(),
            lab.as_mut_ptr(),
        )
    })?;
    Ok((dis, lab))
}

/// A FAISS index serialised in memory.
pub(crate) fn faiss_index_to_bytes(
    what: &'static str,
    index: &faiss::index::IndexImpl,
) -> Result<Vec<u8>, IndexError> {
    let ptr = index.inner_ptr();
    // SAFETY: `ptr` is a live index; FAISS only reads it while writing the stream.
    faiss_write_mem(what, |f| unsafe { faiss_sys::faiss_write_index(ptr, f) })
}

/// A FAISS index read from memory, refused unless it has `dims` dimensions.
pub(crate) fn faiss_index_from_bytes(
    what: &'static str,
    bytes: &[u8],
    dims: Option<usize>,
) -> Result<faiss::index::IndexImpl, IndexError> {
    use faiss::index::FromInnerPtr;
    use faiss::Index;
    let mut raw = std::ptr::null_mut();
    // SAFETY: FAISS writes a new index pointer to `raw` on success.
    faiss_read_mem(what, bytes, |f| unsafe {
        faiss_sys::faiss_read_index(f, 0, &mut raw)
    })?;
    // SAFETY: `raw` was just created by FAISS and is owned by nobody else.
    let index = unsafe { faiss::index::IndexImpl::from_inner_ptr(raw) };
    if let Some(dims) = dims.filter(|&d| d != index.d() as usize) {
        return Err(IndexError::Invalid(format!(
            "{what}: index has {} dimensions, expected {dims}",
            index.d()
        )));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_instruction_sets_the_cpu_lacks() {
        let only_avx2 = |f: &str| f == "avx2";
        let cases: [(&str, Vec<&str>); 4] = [
            ("", vec![]),
            ("-mavx2", vec![]),
            ("-O2 -mavx2 -mfma -mf16c", vec!["fma", "f16c"]),
            ("-mpopcnt", vec!["popcnt"]),
        ];
        for (flags, want) in cases {
            assert_eq!(missing_features(flags, only_avx2), want, "{flags}");
        }
        // This machine runs what it built.
        assert!(check_cpu().is_ok());
    }
}
