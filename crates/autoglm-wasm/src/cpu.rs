//! The x86 vector-register state that native code leaves behind, and why the host cleans it
//! before and after every call into the guest.
//!
//! tract's native matrix kernels (hand-written AVX2 / AVX-512 assembly) return without
//! `vzeroupper`, so after a native inference the upper halves of the vector registers stay in
//! use ("dirty"). Code compiled by Cranelift mixes legacy-SSE moves (`movdqu`, spills and
//! reloads) with VEX arithmetic; on a CPU that tracks the dirty state, every legacy-SSE
//! instruction then pays a state transition or a merge with the stale upper bits. Measured: the
//! component ran 88-212x slower on an AVX-512 Intel machine when it ran after native inference
//! on the same thread (BENCHMARKS.md, "Native and wasm in one process"); 1.4x on a
//! microbenchmark of the same instruction mix on an AMD Zen 4.
//!
//! `vzeroupper` puts the registers back in the clean state at the cost of a few cycles, so
//! [`clean_upper_state`] runs it when the CPU has AVX. The host calls it on entry into the guest
//! (its code then runs as it does in a process of its own) and on return (so the host's own
//! legacy-SSE code, and a native model run next, start clean too).
//! [`upper_state_dirty`] reads the state back (`xgetbv` with ECX = 1, the XINUSE bitmap) for the
//! regression test.
//!
//! The only `unsafe` here calls `std::arch` intrinsics that need a CPU feature, after checking
//! at run time that the CPU has it.

/// Clears the upper halves of the vector registers (`vzeroupper`) when the CPU has AVX; does
/// nothing elsewhere (no AVX, or not x86_64). Cheap enough to call around every guest call.
#[inline]
pub fn clean_upper_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: `_mm256_zeroupper` needs AVX, which the CPU was just checked to have. It
        // only zeroes bits 128 and up of ymm0-15/zmm0-15, which no Rust code keeps live across
        // this call (the compiler treats them as caller-saved and clobbered).
        #[allow(unsafe_code)]
        unsafe {
            std::arch::x86_64::_mm256_zeroupper()
        }
    }
}

/// Whether the upper halves of ymm0-15 / zmm0-15 are in use on this thread (XINUSE bits 2 and
/// 6), or `None` where the CPU cannot say (not x86_64, or no `xgetbv` with ECX = 1).
pub fn upper_state_dirty() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("xsave") {
            return None;
        }
        // CPUID leaf 0xD, sub-leaf 1, EAX bit 2: XGETBV with ECX = 1 is supported.
        #[allow(unused_unsafe, unsafe_code)]
        let leaf = unsafe { std::arch::x86_64::__cpuid_count(0xd, 1) };
        if leaf.eax & (1 << 2) == 0 {
            return None;
        }
        // SAFETY: XGETBV needs XSAVE (checked above) and, with ECX = 1, the CPUID bit above.
        #[allow(unsafe_code)]
        let in_use = unsafe { std::arch::x86_64::_xgetbv(1) };
        const YMM_HI128: u64 = 1 << 2;
        const ZMM_HI256: u64 = 1 << 6;
        Some(in_use & (YMM_HI128 | ZMM_HI256) != 0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_leaves_the_upper_state_clean() {
        clean_upper_state();
        if let Some(dirty) = upper_state_dirty() {
            assert!(!dirty, "upper state still in use after vzeroupper");
        }
    }
}
