//! Register values for iced's effective-address computation, read from [`Registers`].

use iced_x86::Register;

use crate::regs::Registers;

/// Returns the value of `reg` as an address computation uses it, or `None` for a register
/// that [`Registers`] does not contain (vector, mask, control and debug registers).
///
/// A sub-register yields only its own bits, zero-extended: `AL` the low byte of `RAX`, `AH`
/// bits 8 to 15, `EAX` the low 32 bits. `next_ip` is the address of the following
/// instruction, which is what RIP-relative operands are relative to.
pub(super) fn register_value(regs: &Registers, reg: Register, next_ip: u64) -> Option<u64> {
    match reg {
        Register::AH | Register::CH | Register::DH | Register::BH => {
            let full = full_gpr(regs, reg.full_register())?;
            Some((full >> 8) & 0xff)
        }
        Register::RIP => Some(next_ip),
        Register::EIP => Some(next_ip & 0xffff_ffff),
        // In 64-bit mode the CPU treats these segment bases as zero.
        Register::ES | Register::CS | Register::SS | Register::DS => Some(0),
        Register::FS => Some(regs.fs_base),
        Register::GS => Some(regs.gs_base),
        _ if reg.is_gpr() => {
            let full = full_gpr(regs, reg.full_register())?;
            Some(low_bytes(full, reg.size()))
        }
        _ => None,
    }
}

/// Returns the value of a 64-bit general-purpose register.
fn full_gpr(regs: &Registers, reg: Register) -> Option<u64> {
    let value = match reg {
        Register::RAX => regs.rax,
        Register::RCX => regs.rcx,
        Register::RDX => regs.rdx,
        Register::RBX => regs.rbx,
        Register::RSP => regs.rsp,
        Register::RBP => regs.rbp,
        Register::RSI => regs.rsi,
        Register::RDI => regs.rdi,
        Register::R8 => regs.r8,
        Register::R9 => regs.r9,
        Register::R10 => regs.r10,
        Register::R11 => regs.r11,
        Register::R12 => regs.r12,
        Register::R13 => regs.r13,
        Register::R14 => regs.r14,
        Register::R15 => regs.r15,
        _ => return None,
    };
    Some(value)
}

/// Keeps the low `bytes` bytes of `value` (all of it for 8 bytes or more).
fn low_bytes(value: u64, bytes: usize) -> u64 {
    match bytes {
        1 => value & 0xff,
        2 => value & 0xffff,
        4 => value & 0xffff_ffff,
        _ => value,
    }
}

/// Returns the value of a general-purpose register sign-extended from its width, as BT and
/// its relatives read a register bit offset.
pub(super) fn signed_register_value(regs: &Registers, reg: Register) -> Option<i64> {
    if !reg.is_gpr() {
        return None;
    }
    let value = register_value(regs, reg, 0)?;
    // The casts reinterpret the low bits as a signed number of the register's width.
    let signed = match reg.size() {
        1 => i64::from(value as u8 as i8),
        2 => i64::from(value as u16 as i16),
        4 => i64::from(value as u32 as i32),
        _ => value as i64,
    };
    Some(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> Registers {
        Registers {
            rax: 0x1122_3344_5566_7788,
            r9: 0xffff_ffff_8000_fffe,
            fs_base: 0x7f00_0000_1000,
            ..Registers::default()
        }
    }

    #[test]
    fn sub_registers_take_their_own_bits() {
        let r = regs();
        assert_eq!(register_value(&r, Register::AL, 0), Some(0x88));
        assert_eq!(register_value(&r, Register::AH, 0), Some(0x77));
        assert_eq!(register_value(&r, Register::AX, 0), Some(0x7788));
        assert_eq!(register_value(&r, Register::EAX, 0), Some(0x5566_7788));
        assert_eq!(
            register_value(&r, Register::RAX, 0),
            Some(0x1122_3344_5566_7788)
        );
        assert_eq!(register_value(&r, Register::R9L, 0), Some(0xfe));
        assert_eq!(register_value(&r, Register::R9W, 0), Some(0xfffe));
        assert_eq!(register_value(&r, Register::R9D, 0), Some(0x8000_fffe));
    }

    #[test]
    fn segments_and_vector_registers() {
        let r = regs();
        assert_eq!(register_value(&r, Register::FS, 0), Some(0x7f00_0000_1000));
        assert_eq!(register_value(&r, Register::DS, 0), Some(0));
        assert_eq!(register_value(&r, Register::XMM1, 0), None);
        assert_eq!(register_value(&r, Register::K1, 0), None);
    }

    #[test]
    fn signed_values_extend_from_the_register_width() {
        let r = regs();
        assert_eq!(signed_register_value(&r, Register::R9W), Some(-2));
        assert_eq!(signed_register_value(&r, Register::R9D), Some(-0x7fff_0002));
        assert_eq!(signed_register_value(&r, Register::XMM0), None);
    }
}
