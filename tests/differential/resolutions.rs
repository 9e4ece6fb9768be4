//! The one table that settles where ffitrace's decoder and capstone disagree.
//!
//! Each row names capstone's mnemonic (without LOCK or REP prefixes), the form it applies
//! to, the kind of difference, which side the Intel SDM (Intel 64 and IA-32 Architectures
//! Software Developer's Manual, Vol. 2, instruction set reference) proves right, and the
//! fact from the manual. A difference that no row matches fails the differential test.

use std::fmt;

use super::compare::{Form, Kinds, Mismatch, READ, READ_WRITE, WRITE};

/// The side of the comparison that matches the Intel SDM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// ffitrace's decoder is right and capstone's operand description is wrong.
    Decoder,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::Decoder => f.write_str("the decoder"),
        }
    }
}

/// Which instruction forms a row covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormFilter {
    Any,
    /// Only forms with an AVX-512 opmask register.
    Opmasked,
    /// Only forms whose memory operand is addressed through RSP.
    StackPointerBase,
}

impl FormFilter {
    fn admits(self, form: Form) -> bool {
        match self {
            FormFilter::Any => true,
            FormFilter::Opmasked => form.opmasked,
            FormFilter::StackPointerBase => form.stack_pointer_base,
        }
    }
}

/// The kind of difference a row explains. `None` in a field matches any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Kind { capstone: Kinds, decoder: Kinds },
    Size { capstone: Option<u32>, decoder: Option<u32> },
    Address,
    CapstoneOnly(Kinds),
    DecoderOnly(Kinds),
}

impl Pattern {
    fn admits(self, mismatch: &Mismatch) -> bool {
        let size_fits = |want: Option<u32>, got: u32| want.is_none_or(|want| want == got);
        match (self, *mismatch) {
            (Pattern::Kind { capstone, decoder }, Mismatch::Kind { capstone: c, decoder: d }) => {
                capstone == c && decoder == d
            }
            (Pattern::Size { capstone, decoder }, Mismatch::Size { capstone: c, decoder: d }) => {
                size_fits(capstone, c) && size_fits(decoder, d)
            }
            (Pattern::Address, Mismatch::Address { .. }) => true,
            (Pattern::CapstoneOnly(kinds), Mismatch::CapstoneOnly { kinds: k, .. }) => kinds == k,
            (Pattern::DecoderOnly(kinds), Mismatch::DecoderOnly { kinds: k, .. }) => kinds == k,
            _ => false,
        }
    }
}

/// One settled disagreement.
#[derive(Debug)]
pub struct Resolution {
    /// Capstone mnemonics the row applies to.
    pub mnemonics: &'static [&'static str],
    pub form: FormFilter,
    pub pattern: Pattern,
    pub right: Side,
    /// The Intel SDM fact that decides the row.
    pub reason: &'static str,
}

impl Resolution {
    /// Returns true if this row explains `mismatch` on an instruction with `mnemonic` and
    /// `form`.
    pub fn matches(&self, mnemonic: &str, form: Form, mismatch: &Mismatch) -> bool {
        self.mnemonics.contains(&mnemonic) && self.form.admits(form) && self.pattern.admits(mismatch)
    }
}

/// The resolution table.
pub static RESOLUTIONS: &[Resolution] = &[
    Resolution {
        mnemonics: &["lea"],
        form: FormFilter::Any,
        pattern: Pattern::CapstoneOnly(READ),
        right: Side::Decoder,
        reason: "LEA computes the effective address of its source and stores the address; \
                 it does not access memory.",
    },
    Resolution {
        mnemonics: &["nop"],
        form: FormFilter::Any,
        pattern: Pattern::CapstoneOnly(READ),
        right: Side::Decoder,
        reason: "The multi-byte NOP (0F 1F /0) takes a ModR/M operand only for its length \
                 and does not access memory.",
    },
    Resolution {
        mnemonics: &["prefetcht0", "prefetcht1", "prefetcht2", "prefetchnta", "prefetchw"],
        form: FormFilter::Any,
        pattern: Pattern::CapstoneOnly(READ),
        right: Side::Decoder,
        reason: "PREFETCHh is a hint that moves a cache line closer to the processor; it \
                 does not affect program behavior and raises no page fault, so the tracer \
                 never sees it.",
    },
    Resolution {
        mnemonics: &["comisd", "ucomisd", "vcomisd", "vucomisd"],
        form: FormFilter::Any,
        pattern: Pattern::Size { capstone: Some(16), decoder: Some(8) },
        right: Side::Decoder,
        reason: "(V)(U)COMISD compares the low double-precision value: its source is \
                 xmm2/m64, an 8-byte load.",
    },
    Resolution {
        mnemonics: &["comiss", "ucomiss", "vcomiss", "vucomiss"],
        form: FormFilter::Any,
        pattern: Pattern::Size { capstone: Some(16), decoder: Some(4) },
        right: Side::Decoder,
        reason: "(V)(U)COMISS compares the low single-precision value: its source is \
                 xmm2/m32, a 4-byte load.",
    },
    Resolution {
        mnemonics: &["fxsave", "fxsave64"],
        form: FormFilter::Any,
        pattern: Pattern::Size { capstone: None, decoder: Some(512) },
        right: Side::Decoder,
        reason: "FXSAVE stores the x87, MMX and SSE state into a 512-byte area (m512byte).",
    },
    Resolution {
        mnemonics: &["fxrstor", "fxrstor64"],
        form: FormFilter::Any,
        pattern: Pattern::Size { capstone: None, decoder: Some(512) },
        right: Side::Decoder,
        reason: "FXRSTOR loads the x87, MMX and SSE state from a 512-byte area (m512byte).",
    },
    Resolution {
        mnemonics: &["cmpxchg", "cmpxchg8b", "cmpxchg16b"],
        form: FormFilter::Any,
        pattern: Pattern::Kind { capstone: READ, decoder: READ_WRITE },
        right: Side::Decoder,
        reason: "The destination of CMPXCHG, CMPXCHG8B and CMPXCHG16B receives a write \
                 cycle whatever the result of the comparison: a failed compare writes back \
                 the value it read.",
    },
    Resolution {
        mnemonics: &["pop"],
        form: FormFilter::StackPointerBase,
        pattern: Pattern::Address,
        right: Side::Decoder,
        reason: "When RSP is the base of POP's memory destination, the CPU computes the \
                 effective address after it increments RSP.",
    },
    Resolution {
        mnemonics: &["xlatb"],
        form: FormFilter::Any,
        pattern: Pattern::DecoderOnly(READ),
        right: Side::Decoder,
        reason: "XLAT loads the byte at DS:[RBX + zero-extended AL]; capstone lists no \
                 operand for this implicit load.",
    },
    Resolution {
        mnemonics: &[
            "vmovups", "vmovupd", "vmovaps", "vmovapd", "vmovdqu8", "vmovdqu16", "vmovdqu32",
            "vmovdqu64", "vmovdqa32", "vmovdqa64", "vmovss", "vmovsd", "vpcompressd",
            "vpcompressq", "vcompressps", "vcompresspd",
        ],
        form: FormFilter::Opmasked,
        pattern: Pattern::Kind { capstone: READ, decoder: WRITE },
        right: Side::Decoder,
        reason: "The EVEX store forms (memory destination under an opmask) write the \
                 elements whose mask bit is set and read no memory; capstone marks the \
                 destination as read.",
    },
];
