//! One function, compiled twice: for the baseline x86_64 target (SSE2, 4 lanes) and for AVX2
//! (8 lanes), the second chosen at run time when the CPU has it. The hot loops of local features,
//! dense alignment and the exact scan are written as plain loops the compiler vectorises; which
//! instructions it may use is this module's one decision. The two builds do the same operations
//! in the same order on each lane, so their results are bit for bit the same.

/// Defines `fn $name` whose body is compiled once for the baseline target and once with AVX2
/// enabled, and which runs the AVX2 build when `is_x86_feature_detected!("avx2")` (a cached
/// flag after the first call). Every function the body calls that should use the wide lanes too
/// must be `#[inline(always)]`: target features reach only what is inlined.
#[macro_export]
macro_rules! with_avx2 {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $crate::with_avx2! { $(#[$meta])* $vis fn $name($($arg: $ty),*) -> () $body }
    };
    (
        $(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty
        $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn wide($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: `wide` only needs AVX2, which the CPU was just seen to have.
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

#[cfg(test)]
mod tests {
    with_avx2! {
        /// A dot product the compiler vectorises.
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            a.iter().zip(b).map(|(x, y)| x * y).sum()
        }
    }

    #[test]
    fn both_builds_compute_the_same() {
        let a: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.11).cos()).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot(&a, &b).to_bits(), want.to_bits());
    }
}
