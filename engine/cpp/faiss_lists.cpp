// The inverted lists of a FAISS fast-scan IVF index (the voting and dense-window indexes) kept
// where they lie: in a mapped derived file, instead of FAISS's reader copying every list into
// its own memory on each open (docs/FORMAT.md, "kNN lists"). Called from
// engine/src/index/mapped_lists.rs; every function catches what FAISS throws and returns nonzero,
// with the message left for imgvec_lists_last_error.

#include <faiss/IndexIVFFastScan.h>
#include <faiss/IndexIVFPQFastScan.h>
#include <faiss/impl/CodePacker.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>
#include <faiss/invlists/BlockInvertedLists.h>
#include <faiss/invlists/InvertedLists.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

thread_local std::string last_error;

/// Thrown by BorrowedLists::check; reported as DAMAGED.
struct Damaged : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Return code of a call that found a list failing its checksum.
const int DAMAGED = -2;

template <typename F>
int guarded(F f) {
    try {
        f();
        return 0;
    } catch (const Damaged& e) {
        last_error = e.what();
        return DAMAGED;
    } catch (const std::exception& e) {
        last_error = e.what();
    } catch (...) {
        last_error = "unknown C++ exception";
    }
    return -1;
}

faiss::IndexIVFFastScan* fast_scan(const void* index) {
    auto* ivf = dynamic_cast<faiss::IndexIVFFastScan*>(
            reinterpret_cast<faiss::Index*>(const_cast<void*>(index)));
    FAISS_THROW_IF_NOT_MSG(ivf, "not a fast-scan IVF index");
    return ivf;
}

/// CRC-32 continued over `len` bytes (the engine's crc32fast).
typedef uint32_t (*crc_fn)(uint32_t crc, const uint8_t* bytes, size_t len);

/// Advises the kernel about the pages of [start, start + len): rounded inward (only pages wholly
/// inside) or outward. Advice is a hint: failures are ignored, and on memory that is not a
/// mapped file (a copy made in memory) it does nothing that matters.
void advise(const uint8_t* start, size_t len, int advice, bool inward) {
    static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    uintptr_t a = reinterpret_cast<uintptr_t>(start), b = a + len;
    if (len == 0 || page == 0) {
        return;
    }
    if (inward) {
        a = (a + page - 1) / page * page;
        b = b / page * page;
    } else {
        a = a / page * page;
        b = (b + page - 1) / page * page;
    }
    if (b > a) {
        madvise(reinterpret_cast<void*>(a), b - a, advice);
    }
}

/// Lists whose ids and codes lie in memory the caller owns and keeps alive (a mapped file).
/// Read-only: FAISS's add paths refuse them (imgvec_ivf_own_lists copies them first). Each list
/// is checked against its CRC the first time a search is about to read it (check), so an open
/// reads none of them and a search only the lists it probes.
struct BorrowedLists : faiss::ReadOnlyInvertedLists {
    std::vector<size_t> sizes;
    std::vector<const uint8_t*> codes;
    /// Each list's row ids as stored: `id_bytes` (4 or 8) little-endian bytes each.
    std::vector<const uint8_t*> ids;
    size_t id_bytes = 8;
    std::vector<uint32_t> crcs;
    crc_fn crc = nullptr;
    size_t n_per_block = 0, block_size = 0;
    /// Per list: 0 not checked yet, 1 checked.
    std::unique_ptr<std::atomic<uint8_t>[]> checked;
    /// Per list, for 4-byte ids: the ids widened to FAISS's 8 bytes, made when the list is
    /// first probed (FAISS reads ids only as 8-byte arrays).
    std::unique_ptr<std::atomic<faiss::idx_t*>[]> wide;

    explicit BorrowedLists(size_t nlist)
            : ReadOnlyInvertedLists(nlist, faiss::InvertedLists::INVALID_CODE_SIZE),
              sizes(nlist),
              codes(nlist),
              ids(nlist),
              crcs(nlist),
              checked(new std::atomic<uint8_t>[nlist]),
              wide(new std::atomic<faiss::idx_t*>[nlist]) {
        for (size_t i = 0; i < nlist; i++) {
            checked[i].store(0, std::memory_order_relaxed);
            wide[i].store(nullptr, std::memory_order_relaxed);
        }
    }

    ~BorrowedLists() override {
        for (size_t i = 0; i < nlist; i++) {
            delete[] wide[i].load();
        }
    }

    /// Bytes of list `l`'s codes (whole blocks).
    size_t code_len(size_t l) const {
        return (sizes[l] + n_per_block - 1) / n_per_block * block_size;
    }

    /// Makes the `n` lists `list_nos` names (negative: none) ready to search: each not
    /// checked before is checked against its CRC (Damaged at the first that fails), and its
    /// 4-byte ids are widened. Called before FAISS's search, never inside its parallel
    /// regions; concurrent calls are safe (the atomics).
    void check(const faiss::idx_t* list_nos, size_t n) const {
        // The lists are mapped for random access (no read-around of their neighbours, which
        // would read most of the file for a query): ask for exactly the unchecked ones probed,
        // all at once, before the checksums read them.
        std::vector<bool> asked(nlist, false);
        for (size_t i = 0; i < n; i++) {
            faiss::idx_t l = list_nos[i];
            if (l < 0 || size_t(l) >= nlist || asked[l] ||
                checked[l].load(std::memory_order_acquire)) {
                continue;
            }
            asked[l] = true;
            advise(codes[l], code_len(l), MADV_WILLNEED, false);
            advise(ids[l], sizes[l] * id_bytes, MADV_WILLNEED, false);
        }
        for (size_t i = 0; i < n; i++) {
            faiss::idx_t l = list_nos[i];
            if (l < 0 || size_t(l) >= nlist) {
                continue;
            }
            size_t len = sizes[l];
            if (!checked[l].load(std::memory_order_acquire)) {
                uint32_t c = crc(0, codes[l], code_len(l));
                c = crc(c, ids[l], len * id_bytes);
                if (c != crcs[l]) {
                    throw Damaged(
                            "inverted list " + std::to_string(l) + " of " +
                            std::to_string(nlist) + " fails its checksum");
                }
                checked[l].store(1, std::memory_order_release);
            }
            if (id_bytes == 4 && !wide[l].load(std::memory_order_acquire)) {
                auto* w = new faiss::idx_t[len];
                for (size_t j = 0; j < len; j++) {
                    uint32_t v;
                    std::memcpy(&v, ids[l] + 4 * j, 4);
                    w[j] = v;
                }
                faiss::idx_t* none = nullptr;
                if (!wide[l].compare_exchange_strong(none, w, std::memory_order_acq_rel)) {
                    delete[] w;
                }
            }
        }
    }

    size_t list_size(size_t list_no) const override {
        return sizes[list_no];
    }
    const uint8_t* get_codes(size_t list_no) const override {
        return codes[list_no];
    }
    /// Only for lists `check` made ready (the search path checks what it probes first).
    const faiss::idx_t* get_ids(size_t list_no) const override {
        if (id_bytes == 8) {
            return reinterpret_cast<const faiss::idx_t*>(ids[list_no]);
        }
        return wide[list_no].load(std::memory_order_acquire);
    }
};

struct Geometry {
    size_t nlist, n_per_block, block_size;
};

/// The lists' geometry of an index as written or read, after checking that the fields FAISS's
/// reader takes from a file unchecked agree with each other (a crafted file must not make a
/// scan read past its lists): 4-bit PQ, whole 32-vector blocks, M rounded up to even, a
/// quantiser with one centroid per list, no direct map.
Geometry geometry(const faiss::IndexIVFFastScan* ivf) {
    auto* pq = dynamic_cast<const faiss::IndexIVFPQFastScan*>(ivf);
    FAISS_THROW_IF_NOT_MSG(pq, "not an IVF-PQ fast-scan index");
    FAISS_THROW_IF_NOT_MSG(
            pq->pq.nbits == 4 && pq->nbits == 4 && pq->ksub == 16 && pq->M == pq->pq.M &&
                    pq->M > 0 && pq->code_size == pq->pq.code_size,
            "PQ fields disagree");
    FAISS_THROW_IF_NOT_MSG(
            pq->bbs > 0 && pq->bbs % 32 == 0 && pq->M2 == (pq->M + 1) / 2 * 2,
            "fast-scan block fields disagree");
    FAISS_THROW_IF_NOT_MSG(
            ivf->nlist > 0 && ivf->quantizer && size_t(ivf->quantizer->ntotal) == ivf->nlist &&
                    ivf->quantizer->d == ivf->d,
            "coarse quantiser disagrees with the lists");
    FAISS_THROW_IF_NOT_MSG(
            ivf->direct_map.type == faiss::DirectMap::NoMap, "a direct map is not expected");
    std::unique_ptr<faiss::CodePacker> packer(ivf->get_CodePacker());
    FAISS_THROW_IF_NOT_MSG(
            packer->nvec == size_t(pq->bbs) && packer->block_size == pq->bbs * pq->M2 / 2,
            "code packer disagrees with the blocks");
    return {ivf->nlist, packer->nvec, packer->block_size};
}

size_t code_bytes(const Geometry& g, size_t n) {
    return (n + g.n_per_block - 1) / g.n_per_block * g.block_size;
}

} // namespace

extern "C" {

const char* imgvec_lists_last_error() {
    return last_error.c_str();
}

/// Lists, vectors a block and bytes a block of a fast-scan IVF index.
int imgvec_ivf_geometry(
        const void* index,
        size_t* nlist,
        size_t* n_per_block,
        size_t* block_size) {
    return guarded([&] {
        Geometry g = geometry(fast_scan(index));
        *nlist = g.nlist;
        *n_per_block = g.n_per_block;
        *block_size = g.block_size;
    });
}

/// List `list_no`'s size and where its ids and (block-packed) codes lie.
int imgvec_ivf_list(
        const void* index,
        size_t list_no,
        size_t* n,
        const int64_t** ids,
        const uint8_t** codes) {
    return guarded([&] {
        const faiss::IndexIVFFastScan* ivf = fast_scan(index);
        FAISS_THROW_IF_NOT(list_no < ivf->nlist);
        if (auto* borrowed = dynamic_cast<const BorrowedLists*>(ivf->invlists)) {
            faiss::idx_t l = list_no;
            borrowed->check(&l, 1);
        }
        *n = ivf->invlists->list_size(list_no);
        *ids = ivf->invlists->get_ids(list_no);
        *codes = ivf->invlists->get_codes(list_no);
    });
}

/// Writes the index as FAISS does, with every list empty (quantisers, PQ tables, counts):
/// a shallow copy is written, so searches running on `index` meanwhile are not disturbed.
int imgvec_ivf_write_without_lists(const void* index, FILE* f) {
    return guarded([&] {
        auto* ivf = dynamic_cast<const faiss::IndexIVFPQFastScan*>(fast_scan(index));
        Geometry g = geometry(ivf);
        faiss::BlockInvertedLists empty(g.nlist, g.n_per_block, g.block_size);
        faiss::IndexIVFPQFastScan copy(*ivf);
        // The copy shares the quantiser and must not free it or the lists.
        copy.own_fields = false;
        copy.own_invlists = false;
        copy.invlists = &empty;
        faiss::write_index(&copy, f);
    });
}

/// Makes `index` search lists that lie in the caller's memory: list i has sizes[i] vectors,
/// their codes at codes[i] (32-byte aligned, block-packed, whole blocks) and ids at ids[i]
/// (`id_bytes` = 4 or 8 little-endian bytes each), and `crc` of its codes then its ids is
/// crcs[i] (checked when a search first probes it).
/// The memory must outlive the index or the next imgvec_ivf_own_lists.
int imgvec_ivf_borrow_lists(
        void* index,
        size_t nlist,
        const size_t* sizes,
        const uint8_t* const* codes,
        const uint8_t* const* ids,
        size_t id_bytes,
        const uint32_t* crcs,
        crc_fn crc) {
    return guarded([&] {
        faiss::IndexIVFFastScan* ivf = fast_scan(index);
        FAISS_THROW_IF_NOT_MSG(nlist == ivf->nlist, "list count differs from the index's");
        Geometry g = geometry(ivf);
        auto lists = std::make_unique<BorrowedLists>(nlist);
        lists->crc = crc;
        lists->n_per_block = g.n_per_block;
        lists->block_size = g.block_size;
        lists->crcs.assign(crcs, crcs + nlist);
        FAISS_THROW_IF_NOT_MSG(id_bytes == 4 || id_bytes == 8, "ids of 4 or 8 bytes");
        lists->id_bytes = id_bytes;
        size_t total = 0;
        for (size_t i = 0; i < nlist; i++) {
            FAISS_THROW_IF_NOT_MSG(
                    reinterpret_cast<uintptr_t>(codes[i]) % 32 == 0,
                    "list codes not 32-byte aligned");
            FAISS_THROW_IF_NOT_MSG(
                    reinterpret_cast<uintptr_t>(ids[i]) % id_bytes == 0,
                    "list ids not aligned");
            // The caller checked that the lists fit its memory; no size may wrap here either.
            FAISS_THROW_IF_NOT_MSG(
                    sizes[i] <= SIZE_MAX / id_bytes &&
                            sizes[i] / g.n_per_block + 1 <= SIZE_MAX / g.block_size &&
                            total + sizes[i] >= total,
                    "list size out of range");
            lists->sizes[i] = sizes[i];
            lists->codes[i] = codes[i];
            lists->ids[i] = ids[i];
            total += sizes[i];
        }
        // Read only what searches probe (see BorrowedLists::check): codes come first, then ids.
        if (nlist > 0) {
            const uint8_t* first = codes[0];
            const uint8_t* end = ids[nlist - 1] + sizes[nlist - 1] * id_bytes;
            if (end > first) {
                advise(first, size_t(end - first), MADV_RANDOM, true);
            }
        }
        ivf->replace_invlists(lists.release(), true);
        ivf->ntotal = total;
    });
}

/// FAISS's search of `n` queries `x` for their `k` nearest, probing `nprobe` lists each: the
/// coarse quantiser first, then the probed lists that are borrowed and not yet checked are
/// checked (DAMAGED if one fails), then the search of those lists.
int imgvec_ivf_search(
        const void* index,
        int64_t n,
        const float* x,
        int64_t k,
        size_t nprobe,
        float* distances,
        int64_t* labels) {
    return guarded([&] {
        const faiss::IndexIVFFastScan* ivf = fast_scan(index);
        nprobe = std::max<size_t>(1, std::min(nprobe, ivf->nlist));
        std::vector<faiss::idx_t> assign(n * nprobe);
        std::vector<float> centroid_dis(n * nprobe);
        ivf->quantizer->search(n, x, nprobe, centroid_dis.data(), assign.data());
        if (auto* borrowed = dynamic_cast<const BorrowedLists*>(ivf->invlists)) {
            borrowed->check(assign.data(), assign.size());
        }
        faiss::IVFSearchParameters params;
        params.nprobe = nprobe;
        ivf->search_preassigned(
                n, x, k, assign.data(), centroid_dis.data(), distances, labels, false,
                &params);
    });
}

/// Copies borrowed lists into FAISS's own block lists (which adding needs), checking each;
/// does nothing to lists FAISS already owns.
int imgvec_ivf_own_lists(void* index) {
    return guarded([&] {
        faiss::IndexIVFFastScan* ivf = fast_scan(index);
        auto* borrowed = dynamic_cast<const BorrowedLists*>(ivf->invlists);
        if (!borrowed) {
            return;
        }
        Geometry g = geometry(ivf);
        std::vector<faiss::idx_t> all(g.nlist);
        for (size_t i = 0; i < g.nlist; i++) {
            all[i] = i;
        }
        borrowed->check(all.data(), all.size());
        auto owned = std::make_unique<faiss::BlockInvertedLists>(
                g.nlist, ivf->get_CodePacker());
        for (size_t i = 0; i < g.nlist; i++) {
            size_t n = borrowed->sizes[i];
            const faiss::idx_t* ids = borrowed->get_ids(i);
            owned->ids[i].assign(ids, ids + n);
            owned->codes[i].resize(code_bytes(g, n));
            if (n > 0) {
                std::memcpy(owned->codes[i].get(), borrowed->codes[i], code_bytes(g, n));
            }
        }
        ivf->replace_invlists(owned.release(), true);
    });
}

} // extern "C"
