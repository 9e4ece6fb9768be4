//! The one table that settles where ffitrace's decoder and capstone disagree.
//!
//! Each row names capstone's mnemonic (without LOCK or REP prefixes), the form it applies
//! to, the kind of difference, which side the Intel SDM (Intel 64 and IA-32 Architectures
//! Software Developer's Manual, Vol. 2, instruction set reference) proves right, and the
//! fact from the manual. Two rows cover prefix combinations that the SDM and AMD's manual
//! leave undefined. A difference that no row matches fails the differential test.

use std::fmt;

use super::compare::{Form, Kinds, Mismatch, READ, READ_WRITE, WRITE};

/// The side of the comparison that matches the manuals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// ffitrace's decoder is right and capstone's operand description is wrong.
    Decoder,
    /// The manuals leave the result undefined, so neither side is wrong.
    Unspecified,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::Decoder => f.write_str("the decoder is right"),
            Side::Unspecified => f.write_str("the manuals leave it undefined"),
        }
    }
}

/// The capstone mnemonics a row covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mnemonics {
    /// Every mnemonic: only for rows whose form alone identifies the cause.
    Any,
    Only(&'static [&'static str]),
}

/// Which instruction forms a row covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormFilter {
    Any,
    /// Only forms whose explicit memory operand is addressed through RSP.
    StackPointerBase,
    /// Only forms whose first operand, the destination in Intel syntax, is in memory.
    MemoryDestination,
    /// Only forms with a CS, DS, ES or SS segment-override prefix after an FS or GS one.
    NullSegmentAfterFsGs,
    /// Only repeated string instructions whose count register is zero.
    ZeroCount,
    /// Only general-purpose forms with a 66 prefix and an F2 or F3 prefix.
    OperandSizePrefixWithRep,
    /// Only forms with a 66 prefix and REX.W.
    OperandSizePrefixWithRexW,
    /// Only forms where two of 66, F2 and F3 act as conflicting mandatory prefixes.
    MandatoryPrefixConflict,
}

impl FormFilter {
    fn admits(self, form: Form) -> bool {
        match self {
            FormFilter::Any => true,
            FormFilter::StackPointerBase => form.stack_pointer_base,
            FormFilter::MemoryDestination => form.memory_destination,
            FormFilter::NullSegmentAfterFsGs => form.null_segment_after_fs_gs,
            FormFilter::ZeroCount => form.zero_count,
            FormFilter::OperandSizePrefixWithRep => form.operand_size_prefix_with_rep,
            FormFilter::OperandSizePrefixWithRexW => form.operand_size_prefix_with_rex_w,
            FormFilter::MandatoryPrefixConflict => form.mandatory_prefix_conflict,
        }
    }
}

/// A kind of difference a row explains. `None` in a field matches any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Kind {
        capstone: Kinds,
        decoder: Kinds,
    },
    Size {
        capstone: Option<u32>,
        decoder: Option<u32>,
    },
    Address,
    CapstoneOnly(Option<Kinds>),
    DecoderOnly(Option<Kinds>),
    /// Every kind of difference: only for forms the manuals leave undefined.
    Any,
}

impl Pattern {
    fn admits(self, mismatch: &Mismatch) -> bool {
        let size_fits = |want: Option<u32>, got: u32| want.map_or(true, |want| want == got);
        let kinds_fit = |want: Option<Kinds>, got: Kinds| want.map_or(true, |want| want == got);
        match (self, *mismatch) {
            (
                Pattern::Kind { capstone, decoder },
                Mismatch::Kind {
                    capstone: c,
                    decoder: d,
                },
            ) => capstone == c && decoder == d,
            (
                Pattern::Size { capstone, decoder },
                Mismatch::Size {
                    capstone: c,
                    decoder: d,
                },
            ) => size_fits(capstone, c) && size_fits(decoder, d),
            (Pattern::Address, Mismatch::Address { .. }) => true,
            (Pattern::Any, _) => true,
            (Pattern::CapstoneOnly(kinds), Mismatch::CapstoneOnly { kinds: k, .. }) => {
                kinds_fit(kinds, k)
            }
            (Pattern::DecoderOnly(kinds), Mismatch::DecoderOnly { kinds: k, .. }) => {
                kinds_fit(kinds, k)
            }
            _ => false,
        }
    }
}

/// One settled disagreement.
#[derive(Debug)]
pub struct Resolution {
    pub mnemonics: Mnemonics,
    pub form: FormFilter,
    /// The differences the row explains; any one of them matches.
    pub patterns: &'static [Pattern],
    pub right: Side,
    /// The fact from the manuals that decides the row.
    pub reason: &'static str,
}

impl Resolution {
    /// Returns true if this row explains `mismatch` on an instruction with capstone
    /// mnemonic `mnemonic` and form `form`.
    pub fn matches(&self, mnemonic: &str, form: Form, mismatch: &Mismatch) -> bool {
        let mnemonic_fits = match self.mnemonics {
            Mnemonics::Any => true,
            Mnemonics::Only(list) => list.contains(&mnemonic),
        };
        mnemonic_fits
            && self.form.admits(form)
            && self.patterns.iter().any(|pattern| pattern.admits(mismatch))
    }
}

const CAPSTONE_READ_ONLY: &[Pattern] = &[Pattern::CapstoneOnly(Some(READ))];
const STORE_READ_AS_WRITE: &[Pattern] = &[Pattern::Kind {
    capstone: READ,
    decoder: WRITE,
}];
const ANY_SIZE_FROM_CAPSTONE: &[Pattern] = &[Pattern::Size {
    capstone: None,
    decoder: None,
}];

/// The resolution table. The comparison takes the first row that matches a difference.
pub static RESOLUTIONS: &[Resolution] = &[
    // Operands that are not memory accesses.
    Resolution {
        mnemonics: Mnemonics::Only(&["lea"]),
        form: FormFilter::Any,
        patterns: CAPSTONE_READ_ONLY,
        right: Side::Decoder,
        reason: "LEA stores the effective address of its source operand and does not \
                 access memory.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["nop"]),
        form: FormFilter::Any,
        patterns: CAPSTONE_READ_ONLY,
        right: Side::Decoder,
        reason: "The multi-byte NOP (0F 1F /0) has a ModR/M operand only to set its length; \
                 the SDM states that it performs no operation.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&[
            "prefetch",
            "prefetchw",
            "prefetchwt1",
            "prefetcht0",
            "prefetcht1",
            "prefetcht2",
            "prefetchnta",
        ]),
        form: FormFilter::Any,
        patterns: CAPSTONE_READ_ONLY,
        right: Side::Decoder,
        reason: "PREFETCHh is a hint that does not affect program behavior: it raises no \
                 page fault, so the tracer never sees it.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["invlpg"]),
        form: FormFilter::Any,
        patterns: CAPSTONE_READ_ONLY,
        right: Side::Decoder,
        reason: "INVLPG invalidates the TLB entries of the page that holds its operand and \
                 does not load the operand.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&[
            "bndcl", "bndcn", "bndcu", "bndldx", "bndmk", "bndmov", "bndstx",
        ]),
        form: FormFilter::Any,
        patterns: &[Pattern::CapstoneOnly(None)],
        right: Side::Decoder,
        reason: "The MPX instructions sit in the 0F 1A and 0F 1B hint-NOP space and execute \
                 as NOPs while MPX is not enabled. Linux has not enabled MPX since version \
                 5.6 and AMD processors lack it, so iced decodes these bytes as NOP.",
    },
    // Operand sizes.
    Resolution {
        mnemonics: Mnemonics::Only(&["comisd", "ucomisd", "vcomisd", "vucomisd"]),
        form: FormFilter::Any,
        patterns: &[Pattern::Size {
            capstone: Some(16),
            decoder: Some(8),
        }],
        right: Side::Decoder,
        reason: "(V)(U)COMISD compares the low double-precision values: its memory source \
                 is m64.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["comiss", "ucomiss", "vcomiss", "vucomiss"]),
        form: FormFilter::Any,
        patterns: &[Pattern::Size {
            capstone: Some(16),
            decoder: Some(4),
        }],
        right: Side::Decoder,
        reason: "(V)(U)COMISS compares the low single-precision values: its memory source \
                 is m32.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["vgf2p8affineqb", "vgf2p8affineinvqb"]),
        form: FormFilter::Any,
        patterns: &[
            Pattern::Size {
                capstone: Some(1),
                decoder: Some(8),
            },
            Pattern::Address,
            Pattern::CapstoneOnly(None),
            Pattern::DecoderOnly(Some(READ)),
        ],
        right: Side::Decoder,
        reason: "The EVEX forms of VGF2P8AFFINE(INV)QB broadcast from m64bcst: a broadcast \
                 loads one 8-byte element, not a byte, and an 8-bit displacement is scaled \
                 by N = 8 (compressed disp8*N). Capstone takes a byte element, so both its \
                 size and, with a disp8, its address are wrong.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["fxsave", "fxsave64", "fxrstor", "fxrstor64"]),
        form: FormFilter::Any,
        patterns: &[Pattern::Size {
            capstone: Some(8),
            decoder: Some(416),
        }],
        right: Side::Decoder,
        reason: "The operand of FXSAVE and FXRSTOR is a 512-byte area (m512byte), of which \
                 the x87 and SSE state fills bytes 0 to 415 (Vol. 1, FXSAVE area layout); \
                 the decoder reports those 416 bytes, and capstone's 8 is wrong either way.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["fnsave", "frstor"]),
        form: FormFilter::Any,
        patterns: &[
            Pattern::Size {
                capstone: Some(4),
                decoder: Some(108),
            },
            Pattern::Size {
                capstone: Some(4),
                decoder: Some(94),
            },
        ],
        right: Side::Decoder,
        reason: "FNSAVE and FRSTOR store and load the x87 state as m94byte (16-bit operand \
                 size) or m108byte (32-bit operand size).",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["fnstenv", "fldenv"]),
        form: FormFilter::Any,
        patterns: &[Pattern::Size {
            capstone: Some(28),
            decoder: Some(14),
        }],
        right: Side::Decoder,
        reason: "FNSTENV and FLDENV use m14byte with a 16-bit operand size (66 prefix) and \
                 m28byte otherwise.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["call", "jmp", "lcall", "ljmp", "lfs", "lgs", "lss"]),
        form: FormFilter::Any,
        patterns: ANY_SIZE_FROM_CAPSTONE,
        right: Side::Decoder,
        reason: "Far CALL and JMP (FF /3, FF /5) and LFS, LGS, LSS load a far pointer: \
                 m16:16, m16:32 or m16:64, that is 4, 6 or 10 bytes by operand size. \
                 Capstone gives 8 or 10 whatever the operand size.",
    },
    Resolution {
        mnemonics: Mnemonics::Any,
        form: FormFilter::OperandSizePrefixWithRep,
        patterns: &[Pattern::Size {
            capstone: Some(4),
            decoder: Some(2),
        }],
        right: Side::Decoder,
        reason: "A 66 prefix gives a general-purpose instruction (CMPXCHG, BT, CMOVcc and \
                 others) a 16-bit operand, and an F2 or F3 prefix does not change the \
                 operand size. Capstone prints the register operand as a word register but \
                 sizes the memory operand as a dword.",
    },
    Resolution {
        mnemonics: Mnemonics::Any,
        form: FormFilter::OperandSizePrefixWithRexW,
        patterns: &[Pattern::Size {
            capstone: Some(2),
            decoder: Some(8),
        }],
        right: Side::Decoder,
        reason: "REX.W takes precedence over the 66 operand-size prefix, so the operand is \
                 a quadword (PUSH, POP, BSR and others).",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["insw", "outsw"]),
        form: FormFilter::OperandSizePrefixWithRexW,
        patterns: &[Pattern::Size {
            capstone: Some(2),
            decoder: Some(4),
        }],
        right: Side::Decoder,
        reason: "REX.W takes precedence over the 66 operand-size prefix, and INS and OUTS \
                 have no 64-bit operand size, so with REX.W and 66 they move a doubleword.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["clrssbsy", "rstorssp"]),
        form: FormFilter::Any,
        patterns: &[Pattern::Size {
            capstone: Some(4),
            decoder: Some(8),
        }],
        right: Side::Decoder,
        reason: "CLRSSBSY and RSTORSSP operate on an 8-byte shadow-stack token (m64).",
    },
    // Read and write kinds.
    Resolution {
        mnemonics: Mnemonics::Only(&["cmpxchg", "cmpxchg8b", "cmpxchg16b"]),
        form: FormFilter::Any,
        patterns: &[Pattern::Kind {
            capstone: READ,
            decoder: READ_WRITE,
        }],
        right: Side::Decoder,
        reason: "The destination of CMPXCHG, CMPXCHG8B and CMPXCHG16B receives a write \
                 cycle whatever the result of the comparison: a failed compare writes back \
                 the value it read.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["rcl", "rcr", "rol", "ror"]),
        form: FormFilter::MemoryDestination,
        patterns: &[Pattern::Kind {
            capstone: READ,
            decoder: READ_WRITE,
        }],
        right: Side::Decoder,
        reason: "RCL, RCR, ROL and ROR rotate their r/m destination in place: a memory \
                 destination is read and written.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["frstor"]),
        form: FormFilter::Any,
        patterns: &[Pattern::Kind {
            capstone: WRITE,
            decoder: READ,
        }],
        right: Side::Decoder,
        reason: "FRSTOR loads the x87 state from memory and does not store to it.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&[
            "seta", "setae", "setb", "setbe", "sete", "setg", "setge", "setl", "setle", "setne",
            "setno", "setnp", "setns", "seto", "setp", "sets",
        ]),
        form: FormFilter::MemoryDestination,
        patterns: STORE_READ_AS_WRITE,
        right: Side::Decoder,
        reason: "SETcc stores 0 or 1 to its r/m8 destination and does not read it.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&[
            "fst", "fstp", "fist", "fistp", "fisttp", "fbstp", "fnstcw", "fnstsw", "stmxcsr",
            "vstmxcsr",
        ]),
        form: FormFilter::MemoryDestination,
        patterns: STORE_READ_AS_WRITE,
        right: Side::Decoder,
        reason: "The x87 stores and (V)STMXCSR store a value, control word or status word to \
                 their memory destination and do not read it.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&[
            "movd",
            "movq",
            "movss",
            "movsd",
            "movups",
            "movupd",
            "movaps",
            "movapd",
            "movdqu",
            "movdqa",
            "movhps",
            "movhpd",
            "movlps",
            "movlpd",
            "movnti",
            "movntq",
            "movntdq",
            "movntps",
            "movntpd",
            "movntss",
            "movntsd",
            "pextrb",
            "pextrw",
            "pextrd",
            "pextrq",
            "extractps",
            "vmovd",
            "vmovq",
            "vmovss",
            "vmovsd",
            "vmovups",
            "vmovupd",
            "vmovaps",
            "vmovapd",
            "vmovdqu",
            "vmovdqa",
            "vmovdqu8",
            "vmovdqu16",
            "vmovdqu32",
            "vmovdqu64",
            "vmovdqa32",
            "vmovdqa64",
            "vmovhps",
            "vmovhpd",
            "vmovlps",
            "vmovlpd",
            "vmovntdq",
            "vmovntps",
            "vmovntpd",
            "vpextrb",
            "vpextrw",
            "vpextrd",
            "vpextrq",
            "vextractps",
            "vextractf128",
            "vextracti128",
            "vextractf32x4",
            "vextractf64x2",
            "vextractf32x8",
            "vextractf64x4",
            "vextracti32x4",
            "vextracti64x2",
            "vextracti32x8",
            "vextracti64x4",
            "vmaskmovps",
            "vmaskmovpd",
            "vpmaskmovd",
            "vpmaskmovq",
            "vpcompressb",
            "vpcompressw",
            "vpcompressd",
            "vpcompressq",
            "vcompressps",
            "vcompresspd",
            "vcvtps2ph",
            "kmovb",
            "kmovw",
            "kmovd",
            "kmovq",
        ]),
        form: FormFilter::MemoryDestination,
        patterns: STORE_READ_AS_WRITE,
        right: Side::Decoder,
        reason: "These MMX, SSE, AVX and AVX-512 moves, extracts and compresses have an MR \
                 form whose r/m destination is written (w), not read. Capstone marks the \
                 memory destination as read.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&[
            "vpscatterdd",
            "vpscatterdq",
            "vpscatterqd",
            "vpscatterqq",
            "vscatterdps",
            "vscatterdpd",
            "vscatterqps",
            "vscatterqpd",
        ]),
        form: FormFilter::MemoryDestination,
        patterns: STORE_READ_AS_WRITE,
        right: Side::Decoder,
        reason: "The AVX-512 scatters store each element whose opmask bit is set to its own \
                 VSIB address and read no memory. Capstone marks the destination as read.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&[
            "vpgatherdd",
            "vpgatherdq",
            "vpgatherqd",
            "vpgatherqq",
            "vgatherdps",
            "vgatherdpd",
            "vgatherqps",
            "vgatherqpd",
        ]),
        form: FormFilter::Any,
        patterns: &[
            Pattern::Kind {
                capstone: WRITE,
                decoder: READ,
            },
            Pattern::Kind {
                capstone: READ_WRITE,
                decoder: READ,
            },
        ],
        right: Side::Decoder,
        reason: "The gathers load each element whose mask bit is set from its own VSIB \
                 address and store only to registers. Capstone marks the EVEX forms' memory \
                 operand as written, or as read and written.",
    },
    // Addresses.
    Resolution {
        mnemonics: Mnemonics::Only(&["pop"]),
        form: FormFilter::StackPointerBase,
        patterns: &[Pattern::Address],
        right: Side::Decoder,
        reason: "When RSP is the base of POP's memory destination, the CPU computes the \
                 effective address after it increments RSP.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["bt", "bts", "btr", "btc"]),
        form: FormFilter::Any,
        patterns: &[Pattern::Address],
        right: Side::Decoder,
        reason: "With a register bit offset the memory operand is only the bit base: the \
                 signed offset selects the operand-size unit at base + unit * (offset DIV \
                 bits), which is the unit the decoder reports.",
    },
    Resolution {
        mnemonics: Mnemonics::Any,
        form: FormFilter::NullSegmentAfterFsGs,
        patterns: &[Pattern::Any],
        right: Side::Unspecified,
        reason: "Both manuals leave the result of two prefixes of one group undefined. In \
                 64-bit mode the CS, DS, ES and SS bases are zero; iced keeps the FS or GS \
                 override, while capstone takes the last segment prefix.",
    },
    Resolution {
        mnemonics: Mnemonics::Any,
        form: FormFilter::ZeroCount,
        patterns: &[Pattern::CapstoneOnly(None)],
        right: Side::Decoder,
        reason: "A string instruction with a REP, REPE or REPNE prefix and a zero count \
                 register (RCX, or ECX under a 67 prefix) runs no iteration and accesses no \
                 memory.",
    },
    Resolution {
        mnemonics: Mnemonics::Any,
        form: FormFilter::MandatoryPrefixConflict,
        patterns: &[Pattern::Any],
        right: Side::Unspecified,
        reason: "66, F2 and F3 select among the forms of one opcode (the MMX and SSE forms, \
                 or UMONITOR, UMWAIT and TPAUSE), and the SDM defines no form for two of \
                 them together (F2 and F3 are even one prefix group). iced lets F2 or F3 \
                 win, the last one if both (CVTSI2SS after 66 F3), while capstone may take \
                 another (CVTPI2PD), so the two decode different instructions.",
    },
    // Implicit operands that capstone does not list.
    Resolution {
        mnemonics: Mnemonics::Only(&["xlatb"]),
        form: FormFilter::Any,
        patterns: &[Pattern::DecoderOnly(Some(READ))],
        right: Side::Decoder,
        reason: "XLAT loads the byte at DS:[RBX + zero-extended AL].",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["maskmovq", "maskmovdqu", "vmaskmovdqu"]),
        form: FormFilter::Any,
        patterns: &[Pattern::DecoderOnly(Some(WRITE))],
        right: Side::Decoder,
        reason: "(V)MASKMOVDQU and MASKMOVQ store the bytes selected by the mask to the \
                 implicit destination DS:[RDI].",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["movdir64b"]),
        form: FormFilter::Any,
        patterns: &[
            Pattern::DecoderOnly(Some(WRITE)),
            Pattern::Kind {
                capstone: READ,
                decoder: READ_WRITE,
            },
        ],
        right: Side::Decoder,
        reason: "MOVDIR64B stores the 64 bytes it loads from its memory source to the \
                 destination address in its register operand, ES:[reg]; capstone lists only \
                 the source.",
    },
    Resolution {
        mnemonics: Mnemonics::Only(&["umonitor"]),
        form: FormFilter::Any,
        patterns: &[Pattern::DecoderOnly(Some(READ))],
        right: Side::Decoder,
        reason: "UMONITOR arms monitoring of the address in its register operand and is \
                 subject to the permission checks and faults of a byte load from it.",
    },
];
