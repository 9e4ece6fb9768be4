//! Cross-checks of the field decoding against capstone's operand details, over pseudo-random
//! instruction words.
//!
//! Capstone's details are a second opinion, not the reference: the table tests in
//! `tests/decode_aarch64.rs` check exact accesses against assembler output and the Arm ARM.
//! These tests catch a wrong field, shift or extend across thousands of encodings.

use capstone::arch::arm64::{ArchMode, Arm64Extender, Arm64OperandType, Arm64Shift};
use capstone::arch::{ArchOperand, BuildsCapstone};
use capstone::{Capstone, RegId};

use super::{accesses, bit, bits, Gap};
use crate::event::Access;
use crate::regs::Aarch64Registers;

/// Registers whose values keep every address below bit 55, so untagging changes nothing,
/// and whose low halves have bit 31 set, so UXTW and SXTW give different offsets.
fn sample_registers() -> Aarch64Registers {
    let mut regs = Aarch64Registers {
        sp: 0x7ffc_0000_0000,
        pc: 0x5555_0000_1000,
        ..Aarch64Registers::default()
    };
    for (i, value) in regs.x.iter_mut().enumerate() {
        *value = 0x1234_8000_0000 + ((i as u64) << 16) + 8 * i as u64;
    }
    regs
}

/// A xorshift generator, so the sample is the same on every run.
struct Words(u64);

impl Iterator for Words {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Some((self.0 >> 16) as u32)
    }
}

/// Returns the value of the register capstone names `name`, as an address operand reads it.
fn register_value(regs: &Aarch64Registers, name: &str) -> Option<u64> {
    match name {
        "sp" | "wsp" => Some(regs.sp),
        "fp" => Some(regs.x[29]),
        "lr" => Some(regs.x[30]),
        "xzr" | "wzr" => Some(0),
        _ => {
            let number: usize = name.get(1..)?.parse().ok()?;
            let value = *regs.x.get(number)?;
            if name.starts_with('w') {
                Some(value & 0xffff_ffff)
            } else {
                Some(value)
            }
        }
    }
}

/// Capstone's view of one instruction word.
struct CapstoneView {
    mnemonic: String,
    operands: String,
    /// The address of the memory operand: base plus displacement, or base plus the extended
    /// and shifted index. `None` when there is no memory operand.
    memory: Option<u64>,
    /// The last immediate operand, which is the target of a literal load.
    immediate: Option<u64>,
}

fn capstone_view(capstone: &Capstone, word: u32, regs: &Aarch64Registers) -> Option<CapstoneView> {
    let instructions = capstone
        .disasm_count(&word.to_le_bytes(), regs.pc, 1)
        .ok()?;
    let instruction = instructions.iter().next()?;
    let mut view = CapstoneView {
        mnemonic: instruction.mnemonic().unwrap_or_default().to_string(),
        operands: instruction.op_str().unwrap_or_default().to_string(),
        memory: None,
        immediate: None,
    };
    // capstone 0.14 transmutes MRS and MSR operands into its system-register enum, which
    // aborts the process for registers the enum lacks. Neither instruction touches memory.
    if matches!(view.mnemonic.as_str(), "mrs" | "msr") {
        return Some(view);
    }
    let detail = capstone.insn_detail(instruction).ok()?;
    let name = |reg: RegId| capstone.reg_name(reg).unwrap_or_default();
    for operand in detail.arch_detail().operands() {
        let ArchOperand::Arm64Operand(operand) = operand else {
            continue;
        };
        match operand.op_type {
            Arm64OperandType::Mem(mem) => {
                let base = register_value(regs, &name(mem.base()));
                let offset = if mem.index().0 == 0 {
                    Some(i64::from(mem.disp()) as u64)
                } else {
                    register_value(regs, &name(mem.index())).map(|index| {
                        let extended = match operand.ext {
                            Arm64Extender::ARM64_EXT_SXTW => index as u32 as i32 as i64 as u64,
                            _ => index,
                        };
                        match operand.shift {
                            Arm64Shift::Lsl(amount) => extended << amount,
                            _ => extended,
                        }
                    })
                };
                view.memory = base
                    .zip(offset)
                    .map(|(base, offset)| base.wrapping_add(offset));
            }
            Arm64OperandType::Imm(value) => view.immediate = Some(value as u64),
            _ => {}
        }
    }
    Some(view)
}

/// Returns the bytes per register that capstone's text implies for a load or store of
/// general-purpose or SIMD&FP registers: the mnemonic's B, H or SW suffix, or else the width
/// of the last register before the address. Returns `None` for structure loads and stores
/// and the 64-byte forms, whose size the text does not show this way.
fn register_bytes(view: &CapstoneView) -> Option<u32> {
    let mnemonic = view.mnemonic.as_str();
    let structure = ["ld1", "ld2", "ld3", "ld4", "st1", "st2", "st3", "st4"]
        .iter()
        .any(|prefix| mnemonic.starts_with(prefix));
    if structure || mnemonic.contains("64b") {
        return None;
    }
    if mnemonic.ends_with("sw") {
        return Some(4);
    }
    if mnemonic.ends_with('b') {
        return Some(1);
    }
    if mnemonic.ends_with('h') {
        return Some(2);
    }
    let before_address = view.operands.split('[').next()?;
    let register = before_address
        .split(',')
        .map(str::trim)
        .rfind(|token| !token.is_empty() && !token.starts_with('#'))?;
    match register.chars().next()? {
        'b' => Some(1),
        'h' => Some(2),
        'w' | 's' => Some(4),
        'x' | 'd' => Some(8),
        'q' => Some(16),
        _ => None,
    }
}

/// Returns the bytes a structure load or store transfers according to capstone's text:
/// the register count times the bytes per register (whole arrangements such as `4s`),
/// per lane (`{v0.s, v1.s}[1]`) or per replicated element (`ld2r {v0.4s, v1.4s}`).
fn structure_bytes(view: &CapstoneView) -> Option<u32> {
    let list = view.operands.strip_prefix('{')?.split('}').next()?;
    let registers: Vec<&str> = list.split(',').map(str::trim).collect();
    let arrangement = registers.first()?.split('.').nth(1)?;
    let element = match arrangement.chars().last()? {
        'b' => 1,
        'h' => 2,
        's' => 4,
        'd' => 8,
        _ => return None,
    };
    let lanes: u32 = arrangement
        .trim_end_matches(char::is_alphabetic)
        .parse()
        .unwrap_or(1);
    let per_register = if view.mnemonic.ends_with('r') {
        element
    } else {
        element * lanes
    };
    Some(registers.len() as u32 * per_register)
}

/// Returns whether the instruction capstone names `mnemonic` reads and whether it writes:
/// the LSE atomics and their ST aliases, SWP and CAS do both.
fn reads_and_writes(mnemonic: &str) -> (bool, bool) {
    let operation = mnemonic.get(2..).unwrap_or_default();
    let atomic = ["add", "clr", "eor", "set", "smax", "smin", "umax", "umin"]
        .iter()
        .any(|op| operation.starts_with(op));
    match mnemonic.get(..2).unwrap_or_default() {
        "ld" | "st" if atomic => (true, true),
        "sw" | "ca" => (true, true),
        "ld" => (true, false),
        _ => (false, true),
    }
}

/// Returns true for the encodings with modelled accesses that capstone 5 rejects: STGP, and
/// the CONSTRAINED UNPREDICTABLE encodings whose behaviour the Arm ARM leaves to the core.
fn capstone_rejects_knowingly(word: u32) -> bool {
    let (rt, rn, rt2, rs) = (
        bits(word, 4, 0),
        bits(word, 9, 5),
        bits(word, 14, 10),
        bits(word, 20, 16),
    );
    let load = bit(word, 22);
    let general = !bit(word, 26);
    let writeback_overlaps = |registers: &[u32]| rn != 31 && registers.contains(&rn);

    if word & 0x3f00_0000 == 0x0800_0000 {
        // Exclusive, ordered and compare-and-swap: Rs and Rt2 should be ones where unused,
        // and a store-exclusive's status register should differ from the others.
        let compare_and_swap_pair = bit(word, 21) && bits(word, 31, 30) < 0b10;
        let store_exclusive = !bit(word, 23) && !load && !compare_and_swap_pair;
        return rt2 != 31 || rs != 31 || (store_exclusive && (rs == rt || rs == rn));
    }
    if word & 0x3a00_0000 == 0x2800_0000 {
        let stgp = general && bits(word, 31, 30) == 0b01 && !load;
        let writeback = matches!(bits(word, 24, 23), 0b01 | 0b11);
        return stgp
            || (load && rt == rt2)
            || (general && writeback && writeback_overlaps(&[rt, rt2]));
    }
    if word & 0x3a00_0000 == 0x3800_0000 && !bit(word, 24) {
        if bit(word, 21) {
            // LDAPR and the 64-byte loads and stores: Rs should be ones.
            return bits(word, 11, 10) == 0 && rs != 31;
        }
        // Writeback to the transferred register, and (a capstone quirk) LDTR with Rn == Rt.
        let writeback = matches!(bits(word, 11, 10), 0b01 | 0b11);
        let unprivileged_load = bits(word, 11, 10) == 0b10 && bits(word, 23, 22) != 0;
        return general && (writeback || unprivileged_load) && writeback_overlaps(&[rt]);
    }
    false
}

#[test]
fn load_store_addresses_match_capstone() {
    let capstone = Capstone::new()
        .arm64()
        .mode(ArchMode::Arm)
        .detail(true)
        .build()
        .expect("capstone builds");
    let regs = sample_registers();
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for word in Words(0x9e37_79b9_7f4a_7c15).take(400_000) {
        // Set op1 (bits 28:25) to x1x0, the loads-and-stores group.
        let word = (word | 0x0800_0000) & !0x0200_0000;
        let mine = accesses(word, &regs);
        let theirs = capstone_view(&capstone, word, &regs);
        let first: Option<&Access> = mine.as_ref().ok().and_then(|list| list.first());
        let agrees = match (&mine, &theirs, first) {
            (Err(Gap::NotModelled(_)), _, _) => true,
            (Ok(_), None, Some(_)) => capstone_rejects_knowingly(word),
            (Ok(_), None, None) => false,
            (Err(_), None, _) => true,
            (Err(_), Some(view), _) => view.memory.is_none() && view.immediate.is_none(),
            (Ok(_), Some(view), None) => view.mnemonic.starts_with("prf"),
            (Ok(_), Some(view), Some(access)) => {
                compared += 1;
                let sizes_agree = match (register_bytes(view), &mine) {
                    (Some(size), Ok(list)) => list.iter().all(|access| access.size == size),
                    _ => true,
                };
                let structure_agrees = match (structure_bytes(view), &mine) {
                    (Some(size), Ok(list)) => {
                        list.len() == 1 && list.iter().all(|access| access.size == size)
                    }
                    _ => true,
                };
                let kinds_agree = match &mine {
                    Ok(list) => {
                        let reads = list.iter().any(|access| !access.kind.is_write());
                        let writes = list.iter().any(|access| access.kind.is_write());
                        reads_and_writes(&view.mnemonic) == (reads, writes)
                    }
                    Err(_) => true,
                };
                sizes_agree
                    && structure_agrees
                    && kinds_agree
                    && view.memory.or(view.immediate) == Some(access.addr)
            }
        };
        if !agrees {
            let text = super::disassemble(word, regs.pc).unwrap_or_else(|gap| gap.to_string());
            let theirs = theirs.map(|view| (view.memory, view.immediate));
            mismatches.push(format!(
                "{word:#010x} {text}: decoded {mine:x?}, capstone {theirs:x?}"
            ));
        }
    }
    assert!(
        compared > 100_000,
        "only {compared} words had addresses to compare"
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
}

#[test]
fn memory_operands_outside_load_store_are_flagged() {
    let capstone = Capstone::new()
        .arm64()
        .mode(ArchMode::Arm)
        .detail(true)
        .build()
        .expect("capstone builds");
    let regs = sample_registers();
    let mut mismatches = Vec::new();
    for word in Words(0x2545_f491_4f6c_dd1d).take(400_000) {
        // Set op1 (bits 28:25) to anything but x1x0.
        if bits(word, 27, 27) == 1 && !bit(word, 25) {
            continue;
        }
        let Some(view) = capstone_view(&capstone, word, &regs) else {
            continue;
        };
        let mine = accesses(word, &regs);
        // Every memory operand outside the loads-and-stores group belongs to an SVE or SME
        // instruction (not modelled), or to a system instruction by address.
        let flagged = matches!(&mine, Err(Gap::NotModelled(_)))
            || matches!(&mine, Ok(list) if !list.is_empty());
        let system_by_address = matches!(view.mnemonic.as_str(), "dc" | "ic" | "sys");
        if view.memory.is_some() && !flagged && !system_by_address {
            mismatches.push(format!("{word:#010x} {}: decoded {mine:x?}", view.mnemonic));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
}

/// Runs the field decoding on every one of the 2^32 words. Takes about a minute in release
/// mode: `cargo test --release --lib every_word -- --ignored`.
#[test]
#[ignore]
fn every_word_decodes_without_panicking() {
    let regs = sample_registers();
    let mut modelled = 0u64;
    for word in 0..=u32::MAX {
        if let Ok(list) = accesses(word, &regs) {
            modelled += list.len() as u64;
        }
    }
    assert!(modelled > 0);
}
