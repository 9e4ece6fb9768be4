//! Plans for carrying out the commonest memory instructions in the supervisor instead of
//! single-stepping them: general-register loads and stores, SSE, AVX and unmasked AVX-512
//! vector loads and stores, and `stos`/`movs` with or without `rep`. Such an instruction
//! costs one ptrace stop instead of two or four.
//!
//! A plan names the memory to read, the bytes to write and the registers afterwards; it never
//! touches a process. Everything else (flags, arithmetic with a memory operand, atomics,
//! masked AVX-512 forms, other instructions) is left to single-stepping: [`plan_access`]
//! returns [`Planned::Step`].

use iced_x86::{Decoder, DecoderOptions, EncodingKind, Instruction, Mnemonic, OpKind, Register};

use super::registers::register_value;
use crate::event::{Access, AccessKind, AccessRun};
use crate::regs::{Registers, VectorRegisters};

/// The largest part of a `rep stos` or `rep movs` carried out in one stop, which bounds the
/// supervisor's buffers. A longer block is carried out in parts of this size, one stop each.
/// The instruction pointer stays on the instruction and RCX, RSI and RDI show the progress,
/// as after an interrupt, so the instruction faults again for the next part.
const MAX_BLOCK: u64 = 4 << 20;
/// The direction flag in RFLAGS.
const DIRECTION_FLAG: u64 = 1 << 10;

/// The work the supervisor does in place of the instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Emulation {
    /// Load `size` bytes at `addr` into a general-purpose register.
    Load { addr: u64, size: usize, target: Target, extend: Extend },
    /// Store `bytes` at `addr`.
    Store { addr: u64, bytes: Vec<u8> },
    /// `stos` repeated `count` times: `element`-byte copies of `value` from `first` upwards
    /// (or downwards when `descending`), with `left` elements for later stops.
    Fill { first: u64, element: u64, count: u64, value: u64, descending: bool, repeated: bool, left: u64 },
    /// `rep movs` upwards over `count` elements, with `left` elements for later stops. The
    /// blocks may overlap; see [`copy_period`].
    Copy { source: u64, destination: u64, element: u64, count: u64, left: u64 },
    /// Load `size` bytes at `addr` into vector register `register` (`xmm`/`ymm`/`zmmN`). Its
    /// low `rewritten` bytes become the loaded bytes followed by zeros, and the bytes above
    /// keep their value.
    VectorLoad { addr: u64, size: usize, register: usize, rewritten: usize },
}

/// A general-purpose register, or part of one, that a load writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    register: Register,
    size: usize,
}

/// The way a loaded value fills the target register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// `mov`: 8- and 16-bit loads keep the rest of the register, 32-bit loads clear the upper
    /// half.
    None,
    /// `movzx`.
    Zero,
    /// `movsx`, `movsxd`.
    Sign,
}

/// An instruction the supervisor can carry out, with its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The work to do.
    pub emulation: Emulation,
    /// Length of the instruction: RIP advances by it.
    pub len: u64,
}

/// The supervisor's choice for a faulting instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned {
    /// Carry it out with this plan.
    Ready(Plan),
    /// Carry it out once the vector registers are known: it stores one of them, making this
    /// access.
    NeedsVectorRegisters(Access),
    /// Single-step it.
    Step,
}

/// Returns a plan for the instruction at the start of `code`, or `None` when it must be
/// stepped or needs the vector registers.
pub fn plan(code: &[u8], regs: &Registers) -> Option<Plan> {
    match plan_access(code, regs, None) {
        Planned::Ready(plan) => Some(plan),
        Planned::NeedsVectorRegisters(_) | Planned::Step => None,
    }
}

/// Returns what the supervisor can do with the instruction at the start of `code`, given the
/// vector registers when they were read.
pub fn plan_access(code: &[u8], regs: &Registers, vectors: Option<&VectorRegisters>) -> Planned {
    let mut decoder = Decoder::with_ip(64, code, regs.rip, DecoderOptions::NONE);
    let instr = decoder.decode();
    if instr.is_invalid() || instr.has_lock_prefix() || instr.has_xacquire_prefix() || instr.has_xrelease_prefix() {
        return Planned::Step;
    }
    if let Some(vector_move) = VectorMove::of(&instr, regs) {
        return vector_move.plan(&instr, vectors);
    }
    let planned = match instr.mnemonic() {
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd => plan_move(&instr, regs),
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => plan_fill(&instr, regs),
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => plan_copy(&instr, regs),
        _ => None,
    };
    match planned {
        Some(emulation) => Planned::Ready(Plan { emulation, len: instr.len() as u64 }),
        None => Planned::Step,
    }
}

/// A move between memory and a whole XMM, YMM or ZMM register, or its low element, that
/// accesses every byte of its memory operand: the SSE, VEX and EVEX moves of full registers,
/// the non-temporal moves, `lddqu`, and `movd`/`movq`/`movss`/`movsd` to or from memory.
/// EVEX forms with an opmask are stepped, because the mask decides which elements move.
struct VectorMove {
    /// True for a load (memory to register), false for a store.
    load: bool,
    register: Register,
    addr: u64,
    size: usize,
}

impl VectorMove {
    /// Returns the move `instr` makes, or `None` when it is not such a move, its address
    /// cannot be computed, or an aligned form's address is misaligned, because the CPU then
    /// raises a fault that stepping delivers.
    fn of(instr: &Instruction, regs: &Registers) -> Option<VectorMove> {
        let is_vector = |register: Register| register.is_xmm() || register.is_ymm() || register.is_zmm();
        let (load, register, memory_operand) = match (instr.op0_kind(), instr.op1_kind()) {
            (OpKind::Register, OpKind::Memory) => (true, instr.op0_register(), 1),
            (OpKind::Memory, OpKind::Register) => (false, instr.op1_register(), 0),
            _ => return None,
        };
        let unmasked = instr.encoding() != EncodingKind::EVEX || instr.op_mask() == Register::None;
        if instr.op_count() != 2 || !is_vector(register) || !unmasked || instr.is_broadcast() {
            return None;
        }
        let aligned = vector_move_alignment(instr.mnemonic())?;
        let next_ip = instr.next_ip();
        let addr = instr.virtual_address(memory_operand, 0, |reg, _, _| register_value(regs, reg, next_ip))?;
        let size = instr.memory_size().size();
        if size == 0 || size > register.size() || (aligned && addr % size as u64 != 0) {
            return None;
        }
        Some(VectorMove { load, register, addr, size })
    }

    /// Plans the move. A load is planned at once: legacy SSE forms rewrite the low 16 bytes
    /// of the register and keep the rest, VEX and EVEX forms zero every byte above the loaded
    /// ones, up to the 64 bytes of a ZMM register. A store needs the register's bytes.
    fn plan(&self, instr: &Instruction, vectors: Option<&VectorRegisters>) -> Planned {
        let (addr, size, len) = (self.addr, self.size, instr.len() as u64);
        let register = self.register.number();
        if self.load {
            let rewritten = if instr.encoding() == EncodingKind::Legacy { 16 } else { 64 };
            return Planned::Ready(Plan { emulation: Emulation::VectorLoad { addr, size, register, rewritten }, len });
        }
        match vectors {
            Some(vectors) => {
                let bytes = vectors.bytes(register, size);
                Planned::Ready(Plan { emulation: Emulation::Store { addr, bytes }, len })
            }
            None => Planned::NeedsVectorRegisters(access(addr, size as u64, AccessKind::Write)),
        }
    }
}

/// Returns whether a vector move requires its memory operand to be aligned to its size, or
/// `None` for any other mnemonic.
fn vector_move_alignment(mnemonic: Mnemonic) -> Option<bool> {
    use Mnemonic::*;
    match mnemonic {
        Movaps | Movapd | Movdqa | Movntps | Movntpd | Movntdq | Movntdqa | Vmovaps | Vmovapd | Vmovdqa
        | Vmovdqa32 | Vmovdqa64 | Vmovntps | Vmovntpd | Vmovntdq | Vmovntdqa => Some(true),
        Movups | Movupd | Movdqu | Lddqu | Movd | Movq | Movss | Movsd | Vmovups | Vmovupd | Vmovdqu
        | Vmovdqu8 | Vmovdqu16 | Vmovdqu32 | Vmovdqu64 | Vlddqu | Vmovd | Vmovq | Vmovss | Vmovsd => Some(false),
        _ => None,
    }
}

fn plan_move(instr: &Instruction, regs: &Registers) -> Option<Emulation> {
    let next_ip = instr.next_ip();
    let address = |operand| instr.virtual_address(operand, 0, |reg, _, _| register_value(regs, reg, next_ip));
    match (instr.op0_kind(), instr.op1_kind()) {
        (OpKind::Register, OpKind::Memory) => {
            let register = instr.op0_register();
            if !register.is_gpr() {
                return None;
            }
            let size = instr.memory_size().size();
            let extend = match instr.mnemonic() {
                Mnemonic::Movzx => Extend::Zero,
                Mnemonic::Movsx | Mnemonic::Movsxd => Extend::Sign,
                _ => Extend::None,
            };
            if size == 0 || size > 8 {
                return None;
            }
            Some(Emulation::Load { addr: address(1)?, size, target: Target { register, size: register.size() }, extend })
        }
        (OpKind::Memory, OpKind::Register) if instr.mnemonic() == Mnemonic::Mov => {
            let register = instr.op1_register();
            if !register.is_gpr() {
                return None;
            }
            let value = register_value(regs, register, next_ip)?;
            let bytes = value.to_le_bytes()[..register.size()].to_vec();
            Some(Emulation::Store { addr: address(0)?, bytes })
        }
        (OpKind::Memory, OpKind::Immediate8 | OpKind::Immediate16 | OpKind::Immediate32 | OpKind::Immediate8to64 | OpKind::Immediate32to64)
            if instr.mnemonic() == Mnemonic::Mov =>
        {
            let size = instr.memory_size().size();
            if size == 0 || size > 8 {
                return None;
            }
            let value = instr.immediate(1);
            Some(Emulation::Store { addr: address(0)?, bytes: value.to_le_bytes()[..size].to_vec() })
        }
        _ => None,
    }
}

/// `stos`: with `rep`, RCX elements; otherwise one. Only 64-bit addressing without segment
/// override.
fn plan_fill(instr: &Instruction, regs: &Registers) -> Option<Emulation> {
    if !plain_string_form(instr) {
        return None;
    }
    let element = instr.memory_size().size() as u64;
    let repeated = instr.has_rep_prefix();
    let all = if repeated { regs.rcx } else { 1 };
    if all == 0 || element == 0 {
        return None;
    }
    let count = all.min(MAX_BLOCK / element);
    let value = regs.rax & mask(element);
    let descending = regs.eflags & DIRECTION_FLAG != 0;
    Some(Emulation::Fill { first: regs.rdi, element, count, value, descending, repeated, left: all - count })
}

/// `rep movs` upwards. Blocks that overlap with the destination above the source by less than
/// one element are left to stepping: each element's read then takes in part of the one
/// written before it.
fn plan_copy(instr: &Instruction, regs: &Registers) -> Option<Emulation> {
    if !plain_string_form(instr) || !instr.has_rep_prefix() || regs.eflags & DIRECTION_FLAG != 0 {
        return None;
    }
    let element = instr.memory_size().size() as u64;
    let all = regs.rcx;
    if all == 0 || element == 0 {
        return None;
    }
    let count = all.min(MAX_BLOCK / element);
    let (source, destination) = (regs.rsi, regs.rdi);
    // Both blocks must lie below the end of the address space.
    let total = count * element;
    source.checked_add(total)?;
    destination.checked_add(total)?;
    if matches!(copy_period(source, destination, total), Some(period) if period < element) {
        return None;
    }
    Some(Emulation::Copy { source, destination, element, count, left: all - count })
}

/// Returns the distance from source to destination when an upward copy of `total` bytes
/// writes where it reads later. Its result then repeats the first `period` source bytes: the
/// copy reads each byte from `period` bytes back, after writing it. A destination below the
/// source gives what copying through a buffer gives.
fn copy_period(source: u64, destination: u64, total: u64) -> Option<u64> {
    (destination > source && destination - source < total).then(|| destination - source)
}

/// Returns true for a string instruction with 64-bit addressing (its destination is ES:RDI, so no 0x67
/// prefix), no segment override and no `repne`.
fn plain_string_form(instr: &Instruction) -> bool {
    let segment_override = instr.segment_prefix() != Register::None;
    instr.op0_kind() == OpKind::MemoryESRDI && !segment_override && !instr.has_repne_prefix()
}

fn mask(bytes: u64) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    }
}

impl Plan {
    /// Returns the accesses the instruction makes, in order, as one run: one iteration per
    /// element for string forms, a single iteration for loads and stores.
    pub fn accesses(&self) -> AccessRun {
        let (pattern, count, stride) = match &self.emulation {
            Emulation::Load { addr, size, .. } | Emulation::VectorLoad { addr, size, .. } => {
                ([access(*addr, *size as u64, AccessKind::Read), NO_ACCESS], 1, 0)
            }
            Emulation::Store { addr, bytes } => ([access(*addr, bytes.len() as u64, AccessKind::Write), NO_ACCESS], 1, 0),
            Emulation::Fill { first, element, count, descending, .. } => {
                let stride = if *descending { -(*element as i64) } else { *element as i64 };
                ([access(*first, *element, AccessKind::Write), NO_ACCESS], *count, stride)
            }
            Emulation::Copy { source, destination, element, count, .. } => {
                let read = access(*source, *element, AccessKind::Read);
                ([read, access(*destination, *element, AccessKind::Write)], *count, *element as i64)
            }
        };
        let pattern_len = if matches!(self.emulation, Emulation::Copy { .. }) { 2 } else { 1 };
        // `plan` rejects a zero count, so the run always exists and the fallback is not taken.
        AccessRun::new(&pattern[..pattern_len], count, stride).unwrap_or(AccessRun::single(pattern[0]))
    }

    /// Returns the bytes to read from the process before the plan can finish, as (address,
    /// length).
    pub fn read_request(&self) -> Option<(u64, usize)> {
        match &self.emulation {
            Emulation::Load { addr, size, .. } | Emulation::VectorLoad { addr, size, .. } => Some((*addr, *size)),
            Emulation::Copy { source, destination, element, count, .. } => {
                let total = element * count;
                let period = copy_period(*source, *destination, total);
                Some((*source, period.unwrap_or(total) as usize))
            }
            Emulation::Store { .. } | Emulation::Fill { .. } => None,
        }
    }

    /// Returns the bytes to write into the process, given what [`Plan::read_request`] read. A
    /// copy takes the read bytes over as they are.
    pub fn write_request(&self, read: Vec<u8>) -> Option<(u64, Vec<u8>)> {
        match &self.emulation {
            Emulation::Load { .. } | Emulation::VectorLoad { .. } => None,
            Emulation::Store { addr, bytes } => Some((*addr, bytes.clone())),
            Emulation::Fill { first, element, count, value, descending, .. } => {
                let lowest = if *descending { first.wrapping_sub((count - 1) * element) } else { *first };
                let pattern = &value.to_le_bytes()[..*element as usize];
                Some((lowest, pattern.repeat(*count as usize)))
            }
            Emulation::Copy { source, destination, element, count, .. } => {
                let total = (element * count) as usize;
                match copy_period(*source, *destination, total as u64) {
                    Some(_) => {
                        let mut bytes = read.repeat(total.div_ceil(read.len().max(1)));
                        bytes.truncate(total);
                        Some((*destination, bytes))
                    }
                    None => Some((*destination, read)),
                }
            }
        }
    }

    /// Returns the vector register the instruction writes and its new low bytes, given what
    /// [`Plan::read_request`] read: the loaded bytes followed by zeros.
    pub fn vector_register_write(&self, read: &[u8]) -> Option<(usize, Vec<u8>)> {
        let Emulation::VectorLoad { register, rewritten, .. } = &self.emulation else { return None };
        let mut bytes = read.to_vec();
        bytes.resize((*rewritten).max(read.len()), 0);
        Some((*register, bytes))
    }

    /// Returns the plan cut to its first `count` elements when it has more, so the instruction
    /// pointer stays on the instruction, as for a long block. A non-string plan has one
    /// element and stays as it is. A `count` of 0 counts as 1.
    pub fn first_elements(mut self, count: u64) -> Plan {
        if let Emulation::Fill { count: planned, left, .. } | Emulation::Copy { count: planned, left, .. } =
            &mut self.emulation
        {
            let carried_out = count.clamp(1, *planned);
            *left += *planned - carried_out;
            *planned = carried_out;
        }
        self
    }

    /// Returns the registers after the instruction, or after the part of a long `rep`
    /// instruction this plan carries out, given what [`Plan::read_request`] read.
    pub fn registers_after(&self, regs: &Registers, read: &[u8]) -> Registers {
        let mut after = *regs;
        let left = match &self.emulation {
            Emulation::Fill { left, .. } | Emulation::Copy { left, .. } => *left,
            _ => 0,
        };
        if left == 0 {
            after.rip = regs.rip.wrapping_add(self.len);
        }
        match &self.emulation {
            Emulation::Load { target, extend, size, .. } => {
                let mut raw = [0u8; 8];
                raw[..read.len().min(8)].copy_from_slice(&read[..read.len().min(8)]);
                let loaded = u64::from_le_bytes(raw) & mask(*size as u64);
                let value = match extend {
                    Extend::Sign => sign_extend(loaded, *size),
                    Extend::None | Extend::Zero => loaded,
                };
                write_register(&mut after, *target, value);
            }
            Emulation::Store { .. } | Emulation::VectorLoad { .. } => {}
            Emulation::Fill { element, count, descending, repeated, left, .. } => {
                after.rdi = step(regs.rdi, element * count, *descending);
                if *repeated {
                    after.rcx = *left;
                }
            }
            Emulation::Copy { element, count, left, .. } => {
                after.rsi = regs.rsi.wrapping_add(element * count);
                after.rdi = regs.rdi.wrapping_add(element * count);
                after.rcx = *left;
            }
        }
        after
    }
}

fn access(addr: u64, size: u64, kind: AccessKind) -> Access {
    Access { addr, size: size as u32, kind }
}

/// Fills the unused second slot of a one-access pattern.
const NO_ACCESS: Access = Access { addr: 0, size: 0, kind: AccessKind::Read };

fn step(base: u64, distance: u64, descending: bool) -> u64 {
    if descending {
        base.wrapping_sub(distance)
    } else {
        base.wrapping_add(distance)
    }
}

fn sign_extend(value: u64, size: usize) -> u64 {
    let shift = 64 - 8 * size.clamp(1, 8) as u32;
    (((value << shift) as i64) >> shift) as u64
}

/// Writes `value` into the target as the CPU does: a 32-bit destination clears the upper
/// half, 8- and 16-bit destinations keep the other bits, AH to BH are bits 8 to 15.
fn write_register(regs: &mut Registers, target: Target, value: u64) {
    let full = target.register.full_register();
    let Some(slot) = gpr_slot(regs, full) else { return };
    let old = *slot;
    *slot = match (target.register, target.size) {
        (Register::AH | Register::BH | Register::CH | Register::DH, _) => (old & !0xff00) | ((value & 0xff) << 8),
        (_, 1) => (old & !0xff) | (value & 0xff),
        (_, 2) => (old & !0xffff) | (value & 0xffff),
        (_, 4) => value & 0xffff_ffff,
        _ => value,
    };
}

fn gpr_slot(regs: &mut Registers, reg: Register) -> Option<&mut u64> {
    Some(match reg {
        Register::RAX => &mut regs.rax,
        Register::RCX => &mut regs.rcx,
        Register::RDX => &mut regs.rdx,
        Register::RBX => &mut regs.rbx,
        Register::RSP => &mut regs.rsp,
        Register::RBP => &mut regs.rbp,
        Register::RSI => &mut regs.rsi,
        Register::RDI => &mut regs.rdi,
        Register::R8 => &mut regs.r8,
        Register::R9 => &mut regs.r9,
        Register::R10 => &mut regs.r10,
        Register::R11 => &mut regs.r11,
        Register::R12 => &mut regs.r12,
        Register::R13 => &mut regs.r13,
        Register::R14 => &mut regs.r14,
        Register::R15 => &mut regs.r15,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RIP: u64 = 0x40_0000;
    const RDI: u64 = 0x7000_0000;

    fn regs() -> Registers {
        Registers { rip: RIP, rdi: RDI, rax: 0x1111_2222_3333_4455, rcx: 0x5555_6666_7777_8888, ..Registers::default() }
    }

    fn after(code: &[u8], read: &[u8]) -> Registers {
        let plan = plan(code, &regs()).expect("the instruction has a plan");
        plan.registers_after(&regs(), read)
    }

    #[test]
    fn load_widths_fill_register_like_cpu() {
        // mov eax, [rdi]: a 32-bit load clears the upper half.
        assert_eq!(after(&[0x8b, 0x07], &[1, 2, 3, 4]).rax, 0x0403_0201);
        // mov al, [rdi]: an 8-bit load keeps the other bits.
        assert_eq!(after(&[0x8a, 0x07], &[0xab]).rax, 0x1111_2222_3333_44ab);
        // mov ah, [rdi]: bits 8 to 15.
        assert_eq!(after(&[0x8a, 0x27], &[0xab]).rax, 0x1111_2222_3333_ab55);
        // movsx rax, byte [rdi]
        assert_eq!(after(&[0x48, 0x0f, 0xbe, 0x07], &[0x80]).rax, 0xffff_ffff_ffff_ff80);
        // movzx ecx, word [rdi]
        assert_eq!(after(&[0x0f, 0xb7, 0x0f], &[0xff, 0xff]).rcx, 0xffff);
        // movsxd rcx, dword [rdi]
        assert_eq!(after(&[0x48, 0x63, 0x0f], &[0, 0, 0, 0x80]).rcx, 0xffff_ffff_8000_0000);
        assert_eq!(after(&[0x8b, 0x07], &[1, 2, 3, 4]).rip, RIP + 2);
    }

    #[test]
    fn stores_write_register_or_immediate_bytes() {
        let store = |code: &[u8]| plan(code, &regs()).and_then(|plan| plan.write_request(Vec::new()));
        // mov [rdi], ah
        assert_eq!(store(&[0x88, 0x27]), Some((RDI, vec![0x44])));
        // mov qword [rdi], -1
        assert_eq!(store(&[0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0xff]), Some((RDI, vec![0xff; 8])));
        // mov [rdi+8], ecx
        assert_eq!(store(&[0x89, 0x4f, 0x08]), Some((RDI + 8, vec![0x88, 0x88, 0x77, 0x77])));
    }

    #[test]
    fn rep_stos_fills_and_advances() {
        let mut regs = regs();
        regs.rcx = 3;
        let plan = plan(&[0xf3, 0xaa], &regs).expect("rep stosb has a plan");
        assert_eq!(plan.write_request(Vec::new()), Some((RDI, vec![0x55; 3])));
        let after = plan.registers_after(&regs, &[]);
        assert_eq!((after.rcx, after.rdi), (0, RDI + 3));
        assert_eq!(plan.accesses().len(), 3);
        assert_eq!(plan.accesses().stride(), 1);

        regs.eflags |= DIRECTION_FLAG;
        let plan = plan_for(&[0xf3, 0xaa], &regs);
        assert_eq!(plan.write_request(Vec::new()), Some((RDI - 2, vec![0x55; 3])));
        assert_eq!(plan.accesses().get(0).map(|access| access.addr), Some(RDI));
        assert_eq!(plan.accesses().get(2).map(|access| access.addr), Some(RDI - 2));
        assert_eq!(plan.registers_after(&regs, &[]).rdi, RDI - 3);
    }

    #[test]
    fn overlapping_copies_give_what_the_cpu_gives() {
        let mut regs = regs();
        regs.rcx = 6;
        // rep movsb, destination 2 bytes above the source: the first 2 bytes repeat.
        regs.rsi = RDI - 2;
        let plan = plan_for(&[0xf3, 0xa4], &regs);
        assert_eq!(plan.read_request(), Some((RDI - 2, 2)));
        assert_eq!(plan.write_request(vec![7, 8]), Some((RDI, vec![7, 8, 7, 8, 7, 8])));
        assert_eq!(plan.accesses().len(), 12);
        // rep movsw, destination 2 bytes above: one element apart, still a repeat.
        regs.rcx = 3;
        let plan = plan_for(&[0xf3, 0x66, 0xa5], &regs);
        assert_eq!(plan.write_request(vec![7, 8]), Some((RDI, vec![7, 8, 7, 8, 7, 8])));
        // rep movsb, destination below the source: the bytes as read.
        regs.rcx = 4;
        regs.rsi = RDI + 1;
        let plan = plan_for(&[0xf3, 0xa4], &regs);
        assert_eq!(plan.read_request(), Some((RDI + 1, 4)));
        assert_eq!(plan.write_request(vec![1, 2, 3, 4]), Some((RDI, vec![1, 2, 3, 4])));
    }

    #[test]
    fn long_blocks_are_carried_out_in_parts() {
        let mut regs = regs();
        regs.rcx = MAX_BLOCK / 8 + 5;
        // rep stosq: one part, then the instruction runs again for the other five.
        let plan = plan_for(&[0xf3, 0x48, 0xab], &regs);
        assert_eq!(plan.accesses().len(), MAX_BLOCK / 8);
        let after = plan.registers_after(&regs, &[]);
        assert_eq!((after.rip, after.rcx, after.rdi), (RIP, 5, RDI + MAX_BLOCK));
        assert_eq!(plan.write_request(Vec::new()).map(|(_, bytes)| bytes.len() as u64), Some(MAX_BLOCK));
        regs.rcx = 5;
        regs.rdi = after.rdi;
        let last = plan_for(&[0xf3, 0x48, 0xab], &regs).registers_after(&regs, &[]);
        assert_eq!((last.rip, last.rcx, last.rdi), (RIP + 3, 0, RDI + MAX_BLOCK + 40));
        // rep movsb
        regs.rcx = MAX_BLOCK + 1;
        regs.rsi = RDI + 2 * MAX_BLOCK;
        regs.rdi = RDI;
        let plan = plan_for(&[0xf3, 0xa4], &regs);
        assert_eq!(plan.read_request(), Some((RDI + 2 * MAX_BLOCK, MAX_BLOCK as usize)));
        let after = plan.registers_after(&regs, &[]);
        assert_eq!((after.rip, after.rcx, after.rsi, after.rdi), (RIP, 1, RDI + 3 * MAX_BLOCK, RDI + MAX_BLOCK));
    }

    #[test]
    fn first_elements_cut_a_block() {
        let mut regs = regs();
        regs.rcx = 10;
        // rep stosw: the first 4 words, then the instruction runs again for the other 6.
        let plan = plan_for(&[0xf3, 0x66, 0xab], &regs).first_elements(4);
        assert_eq!(plan.accesses().len(), 4);
        let after = plan.registers_after(&regs, &[]);
        assert_eq!((after.rip, after.rcx, after.rdi), (RIP, 6, RDI + 8));
        // A count past the block keeps it whole.
        let whole = plan_for(&[0xf3, 0x66, 0xab], &regs).first_elements(20).registers_after(&regs, &[]);
        assert_eq!((whole.rip, whole.rcx), (RIP + 3, 0));
    }

    fn plan_for(code: &[u8], regs: &Registers) -> Plan {
        plan(code, regs).expect("the instruction has a plan")
    }

    #[test]
    fn forms_left_to_stepping() {
        let mut regs = regs();
        // lock add [rdi], eax
        assert_eq!(plan(&[0xf0, 0x01, 0x07], &regs), None);
        // add [rdi], eax
        assert_eq!(plan(&[0x01, 0x07], &regs), None);
        // addps xmm0, [rdi]
        assert_eq!(plan(&[0x0f, 0x58, 0x07], &regs), None);
        // rep movsq with the destination 3 bytes above the source
        regs.rsi = RDI - 3;
        regs.rcx = 4;
        assert_eq!(plan(&[0xf3, 0x48, 0xa5], &regs), None);
        // rep stosb with a 32-bit address (0x67)
        assert_eq!(plan(&[0x67, 0xf3, 0xaa], &regs), None);
        // rep stosb with rcx = 0 does nothing and needs no plan
        regs.rcx = 0;
        assert_eq!(plan(&[0xf3, 0xaa], &regs), None);
    }

    fn vectors() -> VectorRegisters {
        let mut zmm = vec![[0u64; 8]; 32];
        for (index, register) in zmm.iter_mut().enumerate() {
            for (word, value) in register.iter_mut().enumerate() {
                *value = 0x0101_0101_0101_0101 * (index as u64 * 8 + word as u64 + 1);
            }
        }
        VectorRegisters { zmm, k: [0; 8] }
    }

    fn stored(code: &[u8], regs: &Registers) -> Planned {
        plan_access(code, regs, Some(&vectors()))
    }

    #[test]
    fn vector_stores_write_register_bytes() {
        let regs = regs();
        let expect = |index: usize, size: usize| Emulation::Store { addr: RDI, bytes: vectors().bytes(index, size) };
        let emulation = |planned: Planned| match planned {
            Planned::Ready(plan) => Some(plan.emulation),
            Planned::NeedsVectorRegisters(_) | Planned::Step => None,
        };
        // movups [rdi], xmm1
        assert_eq!(emulation(stored(&[0x0f, 0x11, 0x0f], &regs)), Some(expect(1, 16)));
        // vmovdqu [rdi], ymm2
        assert_eq!(emulation(stored(&[0xc5, 0xfe, 0x7f, 0x17], &regs)), Some(expect(2, 32)));
        // movq [rdi], xmm3
        assert_eq!(emulation(stored(&[0x66, 0x0f, 0xd6, 0x1f], &regs)), Some(expect(3, 8)));
        // movaps [rdi], xmm0 at a 16-byte aligned address
        assert_eq!(emulation(stored(&[0x0f, 0x29, 0x07], &regs)), Some(expect(0, 16)));
        // vmovdqu64 [rdi], zmm16 (EVEX, no opmask)
        assert_eq!(emulation(stored(&[0x62, 0xe1, 0xfe, 0x48, 0x7f, 0x07], &regs)), Some(expect(16, 64)));
    }

    #[test]
    fn vector_loads_rewrite_low_bytes() {
        let load = |code: &[u8]| match plan_access(code, &regs(), None) {
            Planned::Ready(plan) => Some(plan.emulation),
            Planned::NeedsVectorRegisters(_) | Planned::Step => None,
        };
        let vector_load = |size, register, rewritten| Some(Emulation::VectorLoad { addr: RDI, size, register, rewritten });
        // movups xmm1, [rdi]: legacy SSE keeps the bytes above 16
        assert_eq!(load(&[0x0f, 0x10, 0x0f]), vector_load(16, 1, 16));
        // movq xmm3, [rdi]: zero-extends to 16 bytes
        assert_eq!(load(&[0xf3, 0x0f, 0x7e, 0x1f]), vector_load(8, 3, 16));
        // vmovdqu ymm2, [rdi]: VEX zeroes every byte above the 32 loaded
        assert_eq!(load(&[0xc5, 0xfe, 0x6f, 0x17]), vector_load(32, 2, 64));
        // vmovdqu64 zmm16, [rsi] with rsi = rdi
        let mut regs = regs();
        regs.rsi = RDI;
        let planned = plan_access(&[0x62, 0xe1, 0xfe, 0x48, 0x6f, 0x06], &regs, None);
        let Planned::Ready(plan) = planned else { panic!("an unmasked zmm load has a plan: {planned:?}") };
        assert_eq!(plan.emulation, Emulation::VectorLoad { addr: RDI, size: 64, register: 16, rewritten: 64 });
        assert_eq!(plan.read_request(), Some((RDI, 64)));
        assert_eq!(plan.vector_register_write(&[7; 64]), Some((16, vec![7; 64])));
        assert_eq!(plan.registers_after(&regs, &[7; 64]).rip, RIP + 6);

        let plan = plan_for(&[0xf3, 0x0f, 0x7e, 0x1f], &self::regs());
        let mut expected = vec![9u8; 8];
        expected.resize(16, 0);
        assert_eq!(plan.vector_register_write(&[9; 8]), Some((3, expected)));
    }

    #[test]
    fn vector_loads_left_to_stepping() {
        let mut misaligned = regs();
        misaligned.rdi = RDI + 8;
        // movaps xmm0, [rdi] at an address that is not 16-byte aligned
        assert_eq!(plan_access(&[0x0f, 0x28, 0x07], &misaligned, None), Planned::Step);
        // vmovdqu32 zmm0{k1}, [rdi] merges under a mask
        assert_eq!(plan_access(&[0x62, 0xf1, 0x7e, 0x49, 0x6f, 0x07], &regs(), None), Planned::Step);
        // movhps xmm0, [rdi] loads the upper half
        assert_eq!(plan_access(&[0x0f, 0x16, 0x07], &regs(), None), Planned::Step);
        // vbroadcastss ymm0, [rdi]
        assert_eq!(plan_access(&[0xc4, 0xe2, 0x7d, 0x18, 0x07], &regs(), None), Planned::Step);
        // paddd xmm0, [rdi] computes with the loaded value
        assert_eq!(plan_access(&[0x66, 0x0f, 0xfe, 0x07], &regs(), None), Planned::Step);
    }

    #[test]
    fn vector_store_asks_for_registers() {
        // movups [rdi], xmm1
        let planned = plan_access(&[0x0f, 0x11, 0x0f], &regs(), None);
        assert_eq!(planned, Planned::NeedsVectorRegisters(Access { addr: RDI, size: 16, kind: AccessKind::Write }));
        assert_eq!(plan(&[0x0f, 0x11, 0x0f], &regs()), None);
    }

    #[test]
    fn vector_forms_left_to_stepping() {
        let mut misaligned = regs();
        misaligned.rdi = RDI + 8;
        // movaps [rdi], xmm0 at an address that is not 16-byte aligned raises #GP when run
        assert_eq!(stored(&[0x0f, 0x29, 0x07], &misaligned), Planned::Step);
        // movhps [rdi], xmm0 stores the upper half
        assert_eq!(stored(&[0x0f, 0x17, 0x07], &regs()), Planned::Step);
        // vmovdqu32 [rdi]{k1}, zmm0 is masked
        assert_eq!(stored(&[0x62, 0xf1, 0x7e, 0x49, 0x7f, 0x07], &regs()), Planned::Step);
        // vmovdqa64 [rdi+0x40], zmm0 needs 64-byte alignment, and rdi is 8 bytes past it
        assert_eq!(stored(&[0x62, 0xf1, 0xfd, 0x48, 0x7f, 0x47, 0x01], &misaligned), Planned::Step);
        // movups xmm0, [rdi] is a load, planned without the registers
        assert!(matches!(stored(&[0x0f, 0x10, 0x07], &regs()), Planned::Ready(Plan { emulation: Emulation::VectorLoad { .. }, .. })));
    }
}
