//! Compares ffitrace's x86-64 decoder with capstone, one instruction at a time.
//!
//! Both decoders see the same bytes and registers. Capstone (x86-64 mode, detail on) lists
//! each explicit memory operand with segment, base, index, scale, displacement, size and
//! access, and this module computes its effective address from the same register values.
//! The two lists of accesses are then matched by address, size and read/write kind.
//!
//! The rules of the comparison:
//! - Only read and write are compared. Capstone has no conditional access kinds, so the
//!   decoder's `PossibleWrite` counts as a write.
//! - Implicit stack accesses are left out. Capstone does not list the stack slot that PUSH,
//!   POP, CALL, RET, ENTER, LEAVE and their relatives store or load. A decoder access that
//!   capstone has no operand for is dropped only when it is such a slot. A slot is a write
//!   (RSP decreases) or a read (RSP increases) inside the bytes between RSP before and after
//!   the instruction, or a read of the frame that LEAVE or ENTER loads through RBP. Every
//!   explicit operand, including one addressed through RSP, is still compared.
//! - A capstone operand without an access kind (capstone-rs gives `None`) makes no claim
//!   about reads and writes. Its address and size are still compared whenever the decoder
//!   reports an access at that address.
//! - A VSIB operand (gathers and scatters) names a vector index register. Every decoder
//!   access must then be one element at one lane's address with the kind capstone gives.
//! - Under an opmask or a vector mask the decoder reports only the enabled elements. Its
//!   accesses inside the operand capstone lists are compared as one access covering that
//!   operand, so their kinds and bounds are checked but not which elements were enabled.
//! - Any difference left is matched against the rows in `resolutions.rs`, each settled from
//!   the Intel SDM. A difference no row matches is an unresolved disagreement.
//!
//! Instructions that only one decoder accepts, that the decoders split at different lengths,
//! or whose accesses the decoder does not model are counted but not compared.

use std::collections::BTreeMap;
use std::fmt;

use capstone::arch::x86::{ArchMode, ArchSyntax, X86OpMem, X86OperandType};
use capstone::arch::{ArchDetail, BuildsCapstone, BuildsCapstoneSyntax, DetailsArchInsn};
use capstone::{Capstone, RegId};
use ffitrace::decode::{decode_x86_64, decode_x86_64_with_vectors, Decoded};
use ffitrace::event::Access;
use ffitrace::regs::{Registers, VectorRegisters};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, Register};

use super::resolutions::{Resolution, RESOLUTIONS};

/// Maximum length of an x86 instruction in bytes.
pub const MAX_INSTRUCTION_LEN: usize = 15;

/// The read and write kinds of the accesses to one run of bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kinds {
    pub read: bool,
    pub write: bool,
}

pub const READ: Kinds = Kinds {
    read: true,
    write: false,
};
pub const WRITE: Kinds = Kinds {
    read: false,
    write: true,
};
pub const READ_WRITE: Kinds = Kinds {
    read: true,
    write: true,
};
const NONE: Kinds = Kinds {
    read: false,
    write: false,
};

impl Kinds {
    fn is_empty(self) -> bool {
        !self.read && !self.write
    }

    fn union(self, other: Kinds) -> Kinds {
        Kinds {
            read: self.read || other.read,
            write: self.write || other.write,
        }
    }

    fn minus(self, other: Kinds) -> Kinds {
        Kinds {
            read: self.read && !other.read,
            write: self.write && !other.write,
        }
    }

    fn contains(self, other: Kinds) -> bool {
        other.minus(self).is_empty()
    }
}

impl fmt::Display for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match (self.read, self.write) {
            (true, true) => "read+write",
            (true, false) => "read",
            (false, true) => "write",
            (false, false) => "none",
        };
        f.write_str(text)
    }
}

/// One way the two decoders differ on one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mismatch {
    /// Both access the same bytes, with different read/write kinds.
    Kind { capstone: Kinds, decoder: Kinds },
    /// Both access the same address, with different sizes.
    Size { capstone: u32, decoder: u32 },
    /// Same size and kinds at different addresses.
    Address { capstone: u64, decoder: u64 },
    /// Capstone lists an operand that the decoder reports no access for.
    CapstoneOnly { kinds: Kinds, size: u32 },
    /// The decoder reports an access that capstone lists no operand for.
    DecoderOnly { kinds: Kinds, size: u32 },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Kind { capstone, decoder } => {
                write!(f, "kind: capstone {capstone}, decoder {decoder}")
            }
            Mismatch::Size { capstone, decoder } => {
                write!(f, "size: capstone {capstone}, decoder {decoder}")
            }
            Mismatch::Address { capstone, decoder } => {
                write!(f, "address: capstone {capstone:#x}, decoder {decoder:#x}")
            }
            Mismatch::CapstoneOnly { kinds, size } => {
                write!(f, "only capstone lists a {size}-byte {kinds}")
            }
            Mismatch::DecoderOnly { kinds, size } => {
                write!(f, "only the decoder reports a {size}-byte {kinds}")
            }
        }
    }
}

/// Properties of an instruction's form that a resolution row can require.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Form {
    /// An AVX-512 opmask register (`k1` to `k7`) selects the elements.
    pub opmasked: bool,
    /// The explicit memory operand is addressed through RSP or ESP.
    pub stack_pointer_base: bool,
    /// Capstone lists a memory operand first, where Intel syntax puts the destination.
    pub memory_destination: bool,
    /// A CS, DS, ES or SS segment-override prefix follows an FS or GS prefix.
    pub null_segment_after_fs_gs: bool,
    /// A repeated string instruction whose count register (RCX, or ECX under a 67 prefix)
    /// is zero, so it runs no iteration.
    pub zero_count: bool,
    /// The legacy prefixes include 66 (operand size) and F2 or F3 (REPNE or REP), and iced
    /// decodes a general-purpose instruction, for which F2 and F3 do not select the opcode.
    pub operand_size_prefix_with_rep: bool,
    /// A 66 prefix and a REX prefix with W set both apply.
    pub operand_size_prefix_with_rex_w: bool,
    /// The legacy prefixes include two of 66, F2 and F3, which then act as conflicting
    /// mandatory prefixes that select the opcode: iced decodes an MMX or SSE instruction, or
    /// the two decoders name different instructions (UMONITOR and TPAUSE, for example).
    pub mandatory_prefix_conflict: bool,
}

/// Why an instruction was not compared.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// Capstone rejects bytes that iced decodes.
    CapstoneInvalid,
    /// The decoder rejects bytes that capstone decodes.
    DecoderInvalid,
    /// The decoders read instructions of different lengths from the same bytes.
    LengthDiffers,
    /// The decoder does not model the instruction's accesses, with its reason.
    Unsupported(String),
    /// Neither decoder accepts the bytes.
    BothInvalid,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::CapstoneInvalid => f.write_str("only the decoder accepts the bytes"),
            Skip::DecoderInvalid => f.write_str("only capstone accepts the bytes"),
            Skip::LengthDiffers => f.write_str("the decoders disagree on the length"),
            Skip::Unsupported(reason) => write!(f, "decoder unsupported: {reason}"),
            Skip::BothInvalid => f.write_str("neither decoder accepts the bytes"),
        }
    }
}

/// The result of comparing one instruction.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Every compared access agrees.
    Agreed,
    /// Every difference is explained by a row of the resolution table.
    Resolved(Vec<(Mismatch, &'static Resolution)>),
    /// At least one difference has no row: the decoder or the table needs fixing.
    Disagreed(Vec<Mismatch>),
    /// The instruction was not compared.
    Skipped(Skip),
}

/// One instruction's comparison, with what each side reported.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The instruction bytes, cut to the decoded length when both decoders accepted them.
    pub bytes: Vec<u8>,
    /// The registers both decoders used.
    pub regs: Registers,
    /// Capstone's mnemonic without prefixes, or empty when capstone rejected the bytes.
    pub mnemonic: String,
    /// Capstone's text of the instruction.
    pub capstone_text: String,
    /// Capstone's memory operands with the addresses computed from `regs`.
    pub operands: Vec<Operand>,
    /// The decoder's text of the instruction.
    pub decoder_text: String,
    /// The decoder's accesses.
    pub accesses: Vec<Access>,
    pub outcome: Outcome,
}

impl Comparison {
    /// Returns true unless the instruction has an unresolved disagreement.
    pub fn is_consistent(&self) -> bool {
        !matches!(self.outcome, Outcome::Disagreed(_))
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bytes {}", hex(&self.bytes))?;
        writeln!(f, "  capstone: {} {:?}", self.capstone_text, self.operands)?;
        writeln!(f, "  decoder:  {} {:?}", self.decoder_text, self.accesses)?;
        writeln!(f, "  registers: {}", describe_registers(&self.regs))?;
        match &self.outcome {
            Outcome::Agreed => writeln!(f, "  agreed"),
            Outcome::Resolved(rows) => {
                for (mismatch, row) in rows {
                    writeln!(f, "  {mismatch}: resolved, {}: {}", row.right, row.reason)?;
                }
                Ok(())
            }
            Outcome::Disagreed(mismatches) => {
                for mismatch in mismatches {
                    writeln!(f, "  {mismatch}: UNRESOLVED")?;
                }
                Ok(())
            }
            Outcome::Skipped(skip) => writeln!(f, "  not compared: {skip}"),
        }
    }
}

/// A capstone memory operand with its effective address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operand {
    pub addr: u64,
    pub size: u32,
    /// `None` where capstone gives no access kind.
    pub kinds: Option<Kinds>,
    /// The lane addresses of a VSIB operand, empty for any other operand.
    pub lanes: Vec<u64>,
    /// The element size of a VSIB operand in bytes.
    pub element_size: u32,
}

/// The two decoders, ready to compare instructions.
pub struct Comparer {
    capstone: Capstone,
}

impl Comparer {
    /// Builds a capstone handle for x86-64 in Intel syntax with operand details.
    pub fn new() -> Comparer {
        let capstone = Capstone::new()
            .x86()
            .mode(ArchMode::Mode64)
            .syntax(ArchSyntax::Intel)
            .detail(true)
            .build()
            .expect("capstone was built without x86-64 support");
        Comparer { capstone }
    }

    /// Compares the instruction at the start of `code`, located at `regs.rip`.
    ///
    /// The decoder is asked first without vector registers. When it needs them, it is
    /// asked again with `vectors`.
    pub fn compare(&self, code: &[u8], regs: &Registers, vectors: &VectorRegisters) -> Comparison {
        let code = &code[..code.len().min(MAX_INSTRUCTION_LEN)];
        let mut comparison = Comparison {
            bytes: code.to_vec(),
            regs: *regs,
            mnemonic: String::new(),
            capstone_text: String::new(),
            operands: Vec::new(),
            decoder_text: String::new(),
            accesses: Vec::new(),
            outcome: Outcome::Agreed,
        };

        let decoded = match decode_x86_64(code, regs) {
            Decoded::NeedsVectorRegisters => decode_x86_64_with_vectors(code, regs, vectors),
            other => other,
        };
        let capstone = self.capstone_operands(code, regs, vectors);
        let iced = iced_instruction(code, regs.rip);

        let skip = match (&decoded, &capstone, &iced) {
            (_, None, None) => Some(Skip::BothInvalid),
            (_, None, Some(_)) => Some(Skip::CapstoneInvalid),
            (_, Some(_), None) => Some(Skip::DecoderInvalid),
            (_, Some(cs), Some(instr)) if cs.len != instr.len() => Some(Skip::LengthDiffers),
            (Decoded::Unsupported(gap), Some(_), Some(_)) => {
                Some(Skip::Unsupported(gap.reason.clone()))
            }
            (Decoded::NeedsVectorRegisters, _, _) => Some(Skip::Unsupported(
                "needs vector registers even when given them".to_string(),
            )),
            _ => None,
        };
        if let Some(cs) = &capstone {
            comparison.mnemonic = cs.mnemonic.clone();
            comparison.capstone_text = cs.text.clone();
            comparison.operands = cs.operands.clone();
        }
        if let Decoded::Instruction(instr) = &decoded {
            comparison.decoder_text = instr.text.clone();
            comparison.accesses = instr.accesses.clone();
        }
        if let Some(skip) = skip {
            comparison.outcome = Outcome::Skipped(skip);
            return comparison;
        }

        // Both decoders accepted the bytes at the same length: compare the accesses.
        let (Some(cs), Some(instr)) = (capstone, iced) else {
            unreachable!("the match above skips unless both decoders accepted the bytes");
        };
        comparison.bytes.truncate(cs.len);
        let form = Form {
            memory_destination: cs.memory_destination,
            null_segment_after_fs_gs: null_segment_after_fs_gs(&comparison.bytes),
            ..prefix_form(&comparison.bytes, form_of(&instr, regs, &cs.mnemonic))
        };
        let mismatches = mismatches(&cs.operands, &comparison.accesses, &instr, regs, form);
        comparison.outcome = resolve(&cs.mnemonic, form, mismatches);
        comparison
    }

    /// Decodes one instruction with capstone and computes its memory operands' addresses.
    fn capstone_operands(
        &self,
        code: &[u8],
        regs: &Registers,
        vectors: &VectorRegisters,
    ) -> Option<CapstoneInstruction> {
        let instructions = self.capstone.disasm_count(code, regs.rip, 1).ok()?;
        let insn = instructions.iter().next()?;
        let detail = self.capstone.insn_detail(insn).ok()?;
        let ArchDetail::X86Detail(x86) = detail.arch_detail() else {
            return None;
        };

        let full_mnemonic = insn.mnemonic().unwrap_or_default();
        let mnemonic = full_mnemonic
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        let next_ip = regs.rip.wrapping_add(insn.len() as u64);
        let mut operands = Vec::new();
        let memory_destination = x86
            .operands()
            .next()
            .is_some_and(|op| matches!(op.op_type, X86OperandType::Mem(_)));
        for op in x86.operands() {
            let X86OperandType::Mem(mem) = op.op_type else {
                continue;
            };
            let kinds = op.access.map(|access| Kinds {
                read: access.is_readable(),
                write: access.is_writable(),
            });
            let location = self.memory_location(&mem, x86.addr_size(), next_ip, regs, vectors)?;
            operands.push(Operand {
                addr: location.addr,
                size: u32::from(op.size),
                kinds,
                element_size: if location.lanes.is_empty() {
                    0
                } else {
                    vsib_element_size(&mnemonic)
                },
                lanes: location.lanes,
            });
        }
        let text = format!("{} {}", full_mnemonic, insn.op_str().unwrap_or_default());
        Some(CapstoneInstruction {
            len: insn.len(),
            memory_destination,
            mnemonic,
            text: text.trim_end().to_string(),
            operands,
        })
    }

    /// Computes segment base + (base + index * scale + displacement), the sum truncated to
    /// the address size, for one capstone memory operand.
    fn memory_location(
        &self,
        mem: &X86OpMem,
        address_size: u8,
        next_ip: u64,
        regs: &Registers,
        vectors: &VectorRegisters,
    ) -> Option<Location> {
        let name = |reg: RegId| -> Option<String> {
            if reg == RegId::INVALID_REG {
                None
            } else {
                self.capstone.reg_name(reg)
            }
        };
        let base = match name(mem.base()) {
            None => 0,
            Some(reg) => register_value(regs, &reg, next_ip)?,
        };
        let segment = match name(mem.segment()) {
            None => 0,
            Some(reg) => register_value(regs, &reg, next_ip)?,
        };
        let truncate = |sum: u64| {
            if address_size == 4 {
                sum & 0xffff_ffff
            } else {
                sum
            }
        };
        let scale = mem.scale() as u64;
        let base_plus_disp = base.wrapping_add(mem.disp() as u64);

        let index_name = name(mem.index());
        if let Some(lanes) = index_name
            .as_deref()
            .and_then(|reg| vector_lanes(reg, vectors))
        {
            // A VSIB index: each lane (signed dword or qword) gives one element's address.
            let lanes = lanes
                .iter()
                .map(|&lane| {
                    segment.wrapping_add(truncate(
                        base_plus_disp.wrapping_add(lane.wrapping_mul(scale)),
                    ))
                })
                .collect();
            return Some(Location {
                addr: segment.wrapping_add(truncate(base_plus_disp)),
                lanes,
            });
        }
        let index = match index_name {
            None => 0,
            Some(reg) => register_value(regs, &reg, next_ip)?,
        };
        let sum = base_plus_disp.wrapping_add(index.wrapping_mul(scale));
        Some(Location {
            addr: segment.wrapping_add(truncate(sum)),
            lanes: Vec::new(),
        })
    }
}

impl Default for Comparer {
    fn default() -> Self {
        Comparer::new()
    }
}

/// Capstone's view of one instruction.
struct CapstoneInstruction {
    len: usize,
    memory_destination: bool,
    mnemonic: String,
    text: String,
    operands: Vec<Operand>,
}

/// An effective address, and a VSIB operand's lane addresses.
struct Location {
    addr: u64,
    lanes: Vec<u64>,
}

/// Decodes the instruction with iced, for the properties capstone does not give: stack
/// effects and opmasks.
fn iced_instruction(code: &[u8], rip: u64) -> Option<Instruction> {
    let mut decoder = Decoder::try_with_ip(64, code, rip, DecoderOptions::NONE).ok()?;
    let instr = decoder.decode();
    (!instr.is_invalid()).then_some(instr)
}

fn form_of(instr: &Instruction, regs: &Registers, capstone_mnemonic: &str) -> Form {
    let stack_pointer_base = (0..instr.op_count())
        .any(|i| instr.op_kind(i) == iced_x86::OpKind::Memory)
        && matches!(instr.memory_base(), Register::RSP | Register::ESP);
    let string = (0..instr.op_count()).any(|i| {
        matches!(
            instr.op_kind(i),
            iced_x86::OpKind::MemorySegRSI
                | iced_x86::OpKind::MemorySegESI
                | iced_x86::OpKind::MemoryESRDI
                | iced_x86::OpKind::MemoryESEDI
        )
    });
    let mmx_or_sse = instr.cpuid_features().iter().any(|feature| {
        use iced_x86::CpuidFeature::{MMX, SSE, SSE2, SSE3, SSE4A, SSE4_1, SSE4_2, SSSE3};
        matches!(
            feature,
            MMX | SSE | SSE2 | SSE3 | SSSE3 | SSE4_1 | SSE4_2 | SSE4A
        )
    });
    let repeated = string && (instr.has_rep_prefix() || instr.has_repne_prefix());
    let count = if instr.memory_base() == Register::None
        && (0..instr.op_count()).any(|i| {
            matches!(
                instr.op_kind(i),
                iced_x86::OpKind::MemorySegESI | iced_x86::OpKind::MemoryESEDI
            )
        }) {
        regs.rcx & 0xffff_ffff
    } else {
        regs.rcx
    };
    Form {
        opmasked: instr.op_mask() != Register::None,
        stack_pointer_base,
        memory_destination: false,
        null_segment_after_fs_gs: false,
        zero_count: repeated && count == 0,
        operand_size_prefix_with_rep: false,
        operand_size_prefix_with_rex_w: false,
        // Completed by `prefix_form`, which reads the prefixes.
        mandatory_prefix_conflict: mmx_or_sse || !same_mnemonic(instr, capstone_mnemonic),
    }
}

/// Returns true if iced's mnemonic for `instr` is capstone's `mnemonic`.
fn same_mnemonic(instr: &Instruction, mnemonic: &str) -> bool {
    format!("{:?}", instr.mnemonic()).eq_ignore_ascii_case(mnemonic)
}

/// Adds to `form` the facts about the 66, F2, F3 and REX prefixes at the start of `bytes`.
fn prefix_form(bytes: &[u8], form: Form) -> Form {
    let mut legacy = Vec::new();
    let mut rex = None;
    for &byte in bytes {
        match byte {
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 => {
                legacy.push(byte);
                // A REX prefix counts only right before the opcode.
                rex = None;
            }
            0x40..=0x4f => rex = Some(byte),
            _ => break,
        }
    }
    let operand_size_prefix = legacy.contains(&0x66);
    let prefixes_select_opcode = form.mandatory_prefix_conflict;
    Form {
        // Where the prefixes select the opcode, the pair is a mandatory-prefix conflict.
        operand_size_prefix_with_rep: operand_size_prefix
            && (legacy.contains(&0xf2) || legacy.contains(&0xf3))
            && !prefixes_select_opcode,
        operand_size_prefix_with_rex_w: operand_size_prefix
            && rex.is_some_and(|rex| rex & 0x08 != 0),
        mandatory_prefix_conflict: prefixes_select_opcode
            && [0x66, 0xf2, 0xf3]
                .iter()
                .filter(|prefix| legacy.contains(prefix))
                .count()
                >= 2,
        ..form
    }
}

/// Returns true if the legacy prefixes of `bytes` put a CS, DS, ES or SS segment override
/// after an FS or GS override. A REX byte among the legacy prefixes is skipped, as the CPU
/// ignores a REX prefix that does not come right before the opcode.
fn null_segment_after_fs_gs(bytes: &[u8]) -> bool {
    let mut seen_fs_gs = false;
    for &byte in bytes {
        match byte {
            0x64 | 0x65 => seen_fs_gs = true,
            0x26 | 0x2e | 0x36 | 0x3e if seen_fs_gs => return true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x40..=0x4f | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 => (),
            _ => return false,
        }
    }
    false
}

/// Returns true for instructions whose mask selects which elements are accessed, so the
/// decoder may report fewer bytes than the operand.
fn is_masked(instr: &Instruction, form: Form) -> bool {
    form.opmasked
        || matches!(
            instr.mnemonic(),
            Mnemonic::Maskmovq
                | Mnemonic::Maskmovdqu
                | Mnemonic::Vmaskmovdqu
                | Mnemonic::Vmaskmovps
                | Mnemonic::Vmaskmovpd
                | Mnemonic::Vpmaskmovd
                | Mnemonic::Vpmaskmovq
        )
}

/// The decoder's accesses grouped by `(address, size)`, with the kinds at each.
type AccessMap = BTreeMap<(u64, u32), Kinds>;

/// Lists the differences between capstone's operands and the decoder's accesses.
fn mismatches(
    operands: &[Operand],
    accesses: &[Access],
    instr: &Instruction,
    regs: &Registers,
    form: Form,
) -> Vec<Mismatch> {
    let mut decoder = AccessMap::new();
    for access in accesses {
        let kinds = if access.kind.is_write() { WRITE } else { READ };
        let entry = decoder.entry((access.addr, access.size)).or_default();
        *entry = entry.union(kinds);
    }

    // Step 0: operands at the same bytes (MOVS with RSI equal to RDI) become one, since the
    // decoder's accesses are grouped the same way.
    let operands = merge_same_bytes(operands);

    // Step 1: operands that the decoder reports at the same address and size. A VSIB operand
    // takes the element accesses on its lanes, and a masked operand the accesses inside it.
    let mut capstone_left: Vec<(u64, u32, Kinds)> = Vec::new();
    let mut mismatches = Vec::new();
    let masked = is_masked(instr, form);
    for operand in &operands {
        if !operand.lanes.is_empty() {
            mismatches.extend(take_lane_accesses(operand, &mut decoder));
            continue;
        }
        if masked && !cover_element_accesses(operand, &mut decoder) {
            // The mask enabled no element of this operand.
            continue;
        }
        let Some(kinds) = operand.kinds else {
            // No claim about reads and writes: accept whatever the decoder reports there.
            decoder.remove(&(operand.addr, operand.size));
            if let Some(size) = size_at(&decoder, operand.addr) {
                decoder.remove(&(operand.addr, size));
                mismatches.push(Mismatch::Size {
                    capstone: operand.size,
                    decoder: size,
                });
            }
            continue;
        };
        match decoder.remove(&(operand.addr, operand.size)) {
            Some(found) => {
                let hidden =
                    implicit_kinds(instr, regs, operand.addr, operand.size, found.minus(kinds));
                let found = found.minus(hidden);
                if found.is_empty() {
                    // Only an implicit stack access lies here: pair the operand in step 3.
                    capstone_left.push((operand.addr, operand.size, kinds));
                } else if found != kinds {
                    mismatches.push(Mismatch::Kind {
                        capstone: kinds,
                        decoder: found,
                    });
                }
            }
            None => capstone_left.push((operand.addr, operand.size, kinds)),
        }
    }

    // Step 2: the decoder's implicit stack accesses, which capstone does not list.
    decoder.retain(|&(addr, size), kinds| {
        *kinds = kinds.minus(implicit_kinds(instr, regs, addr, size, *kinds));
        !kinds.is_empty()
    });

    // Step 3: pair what is left, first by address (size differs), then by size and kinds
    // (address differs), then by kinds alone (both differ). Whatever stays unpaired was seen
    // by one side only.
    for (addr, size, kinds) in capstone_left {
        if let Some(found_size) = size_at(&decoder, addr) {
            let found = decoder.remove(&(addr, found_size)).unwrap_or(NONE);
            mismatches.push(Mismatch::Size {
                capstone: size,
                decoder: found_size,
            });
            if found != kinds {
                mismatches.push(Mismatch::Kind {
                    capstone: kinds,
                    decoder: found,
                });
            }
            continue;
        }
        let same_shape = decoder
            .iter()
            .find(|(&(_, s), &k)| s == size && k == kinds)
            .map(|(&key, _)| key);
        if let Some(key) = same_shape {
            decoder.remove(&key);
            mismatches.push(Mismatch::Address {
                capstone: addr,
                decoder: key.0,
            });
            continue;
        }
        // Both address and size differ (POP to an RSP-based word under REX.W): each
        // difference must have its own row.
        let same_kinds = decoder
            .iter()
            .find(|(_, &k)| k == kinds)
            .map(|(&key, _)| key);
        if let Some(key) = same_kinds {
            decoder.remove(&key);
            mismatches.push(Mismatch::Address {
                capstone: addr,
                decoder: key.0,
            });
            mismatches.push(Mismatch::Size {
                capstone: size,
                decoder: key.1,
            });
            continue;
        }
        mismatches.push(Mismatch::CapstoneOnly { kinds, size });
    }
    for (&(_, size), &kinds) in &decoder {
        mismatches.push(Mismatch::DecoderOnly { kinds, size });
    }
    mismatches
}

/// Merges operands that cover the same bytes into one with the kinds of both. The result
/// has no access kind if either operand has none.
fn merge_same_bytes(operands: &[Operand]) -> Vec<Operand> {
    let mut merged: Vec<Operand> = Vec::new();
    for operand in operands {
        let same = merged.iter_mut().find(|other| {
            other.lanes.is_empty()
                && operand.lanes.is_empty()
                && other.addr == operand.addr
                && other.size == operand.size
        });
        match same {
            Some(other) => {
                other.kinds = match (other.kinds, operand.kinds) {
                    (Some(a), Some(b)) => Some(a.union(b)),
                    _ => None,
                };
            }
            None => merged.push(operand.clone()),
        }
    }
    merged
}

/// Returns the size of a decoder access at `addr`, if there is one.
fn size_at(decoder: &AccessMap, addr: u64) -> Option<u32> {
    decoder
        .range((addr, 0)..=(addr, u32::MAX))
        .next()
        .map(|(&(_, size), _)| size)
}

/// Removes the decoder's accesses that are one element at one lane address of a VSIB
/// operand, and returns their kinds if capstone gives the operand other kinds. Accesses off
/// the lanes or of another size stay and are reported.
fn take_lane_accesses(operand: &Operand, decoder: &mut AccessMap) -> Option<Mismatch> {
    let mut found = NONE;
    decoder.retain(|&(addr, size), kinds| {
        let on_lane = operand.lanes.contains(&addr) && size == operand.element_size;
        if on_lane {
            found = found.union(*kinds);
        }
        !on_lane
    });
    let expected = operand.kinds?;
    (!found.is_empty() && found != expected).then_some(Mismatch::Kind {
        capstone: expected,
        decoder: found,
    })
}

/// Replaces the decoder's accesses inside a masked operand with one access to the whole
/// operand, with the kinds of all of them, and returns false if there were none.
///
/// The decoder reports only the elements the mask enables, in runs, while capstone lists the
/// whole operand. Covering the runs lets the comparison check their kinds and that none lies
/// outside the operand, but not which elements the mask enabled.
fn cover_element_accesses(operand: &Operand, decoder: &mut AccessMap) -> bool {
    let mut kinds = NONE;
    decoder.retain(|&(addr, size), found| {
        // Offsets from the operand's start stay correct when the operand wraps around zero.
        let offset = addr.wrapping_sub(operand.addr);
        let inside =
            offset < u64::from(operand.size) && offset + u64::from(size) <= u64::from(operand.size);
        if inside {
            kinds = kinds.union(*found);
        }
        !inside
    });
    if kinds.is_empty() {
        return false;
    }
    decoder.insert((operand.addr, operand.size), kinds);
    true
}

/// Returns the subset of `kinds` that an implicit stack access of `instr` explains for the
/// `size` bytes at `addr`.
///
/// The slot an instruction pushes lies between RSP after and RSP before it, and is written.
/// The slot it pops lies between RSP before and after, and is read. LEAVE loads the saved
/// frame pointer at RBP, and ENTER with a nesting level copies frame pointers from below
/// RBP; both are reads.
fn implicit_kinds(
    instr: &Instruction,
    regs: &Registers,
    addr: u64,
    size: u32,
    kinds: Kinds,
) -> Kinds {
    if kinds.is_empty() || !instr.is_stack_instruction() {
        return NONE;
    }
    let increment = i64::from(instr.stack_pointer_increment());
    let inside = |start: u64, len: u64| {
        let offset = addr.wrapping_sub(start);
        offset < len && offset + u64::from(size) <= len
    };

    let mut implicit = NONE;
    if increment < 0
        && inside(
            regs.rsp.wrapping_sub(increment.unsigned_abs()),
            increment.unsigned_abs(),
        )
    {
        implicit = implicit.union(WRITE);
    }
    if increment > 0 && inside(regs.rsp, increment.unsigned_abs()) {
        implicit = implicit.union(READ);
    }
    let frame_read = match instr.mnemonic() {
        Mnemonic::Leave => inside(regs.rbp, 8),
        // ENTER copies at most 31 frame pointers of 8 bytes from below RBP.
        Mnemonic::Enter => inside(regs.rbp.wrapping_sub(31 * 8), 31 * 8),
        _ => false,
    };
    if frame_read {
        implicit = implicit.union(READ);
    }
    Kinds {
        read: kinds.read && implicit.read,
        write: kinds.write && implicit.write,
    }
}

/// Settles `mismatches` with the resolution table.
fn resolve(mnemonic: &str, form: Form, mismatches: Vec<Mismatch>) -> Outcome {
    if mismatches.is_empty() {
        return Outcome::Agreed;
    }
    let mut resolved = Vec::new();
    let mut unresolved = Vec::new();
    for mismatch in mismatches {
        match RESOLUTIONS
            .iter()
            .find(|row| row.matches(mnemonic, form, &mismatch))
        {
            Some(row) => resolved.push((mismatch, row)),
            None => unresolved.push(mismatch),
        }
    }
    if unresolved.is_empty() {
        Outcome::Resolved(resolved)
    } else {
        Outcome::Disagreed(unresolved)
    }
}

/// Returns the element size of a gather or scatter from its mnemonic: `ps` and `d` name
/// doublewords, `pd` and `q` quadwords.
fn vsib_element_size(mnemonic: &str) -> u32 {
    if mnemonic.ends_with("pd") || mnemonic.ends_with('q') {
        8
    } else {
        4
    }
}

/// Returns the index lanes of vector register `name` (`xmm3`, `ymm17`, `zmm31`), read as
/// signed doublewords or quadwords as the instruction's index width needs.
///
/// Capstone's VSIB operand does not say the index width, so both readings are returned:
/// a decoder access on either reading's lane counts as on a lane.
fn vector_lanes(name: &str, vectors: &VectorRegisters) -> Option<Vec<u64>> {
    let (bytes, number) = if let Some(number) = name.strip_prefix("xmm") {
        (16, number)
    } else if let Some(number) = name.strip_prefix("ymm") {
        (32, number)
    } else if let Some(number) = name.strip_prefix("zmm") {
        (64, number)
    } else {
        return None;
    };
    let index: usize = number.parse().ok()?;
    let raw = vectors.bytes(index, bytes);
    let dwords = raw
        .chunks_exact(4)
        .map(|chunk| i64::from(i32::from_le_bytes(chunk.try_into().unwrap_or_default())) as u64);
    let qwords = raw
        .chunks_exact(8)
        .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
    Some(dwords.chain(qwords).collect())
}

/// Returns the value a register contributes to an address, by its capstone or iced name:
/// a general-purpose register's own bits zero-extended, RIP as the next instruction's
/// address, FS and GS as their bases, the other segments as zero.
pub fn register_value(regs: &Registers, name: &str, next_ip: u64) -> Option<u64> {
    let name = name.to_ascii_lowercase();
    let special = match name.as_str() {
        "rip" => Some(next_ip),
        "eip" => Some(next_ip & 0xffff_ffff),
        "riz" | "eiz" => Some(0),
        "fs" => Some(regs.fs_base),
        "gs" => Some(regs.gs_base),
        "cs" | "ds" | "es" | "ss" => Some(0),
        "ah" => Some((regs.rax >> 8) & 0xff),
        "ch" => Some((regs.rcx >> 8) & 0xff),
        "dh" => Some((regs.rdx >> 8) & 0xff),
        "bh" => Some((regs.rbx >> 8) & 0xff),
        _ => None,
    };
    if special.is_some() {
        return special;
    }

    // Legacy names: rax, eax, ax, al and the same for the other seven.
    const LEGACY: [(&str, &str, &str, &str); 8] = [
        ("rax", "eax", "ax", "al"),
        ("rcx", "ecx", "cx", "cl"),
        ("rdx", "edx", "dx", "dl"),
        ("rbx", "ebx", "bx", "bl"),
        ("rsp", "esp", "sp", "spl"),
        ("rbp", "ebp", "bp", "bpl"),
        ("rsi", "esi", "si", "sil"),
        ("rdi", "edi", "di", "dil"),
    ];
    for (number, (q, d, w, b)) in LEGACY.iter().enumerate() {
        let full = gpr(regs, number);
        if name == *q {
            return Some(full);
        }
        if name == *d {
            return Some(full & 0xffff_ffff);
        }
        if name == *w {
            return Some(full & 0xffff);
        }
        if name == *b {
            return Some(full & 0xff);
        }
    }

    // r8 to r15 with the d, w and b (capstone) or l (iced) suffixes.
    let rest = name.strip_prefix('r')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let number: usize = digits.parse().ok()?;
    if !(8..=15).contains(&number) {
        return None;
    }
    let full = gpr(regs, number);
    match &rest[digits.len()..] {
        "" => Some(full),
        "d" => Some(full & 0xffff_ffff),
        "w" => Some(full & 0xffff),
        "b" | "l" => Some(full & 0xff),
        _ => None,
    }
}

/// Returns general-purpose register `number` in encoding order (0 is RAX, 15 is R15).
fn gpr(regs: &Registers, number: usize) -> u64 {
    [
        regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi, regs.r8,
        regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ][number]
}

/// Formats bytes as space-separated hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lists the registers an address can use, for failure messages.
pub fn describe_registers(regs: &Registers) -> String {
    let names = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
    let mut parts: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(number, name)| format!("{name}={:#x}", gpr(regs, number)))
        .collect();
    parts.push(format!("rip={:#x}", regs.rip));
    parts.push(format!("fs_base={:#x}", regs.fs_base));
    parts.push(format!("gs_base={:#x}", regs.gs_base));
    parts.push(format!("eflags={:#x}", regs.eflags));
    parts.join(" ")
}
