//! Reading the vector and opmask registers from the XSAVE area (`PTRACE_GETREGSET` with
//! `NT_X86_XSTATE`), which Linux returns in the standard (non-compacted) format.

use crate::core::KeyRights;
use crate::regs::VectorRegisters;

/// `NT_X86_XSTATE` from `<elf.h>`.
const NT_X86_XSTATE: libc::c_int = 0x202;
/// Large enough for every XSAVE component Linux exposes today, AMX tiles included.
const XSAVE_BUFFER_LEN: usize = 16 * 1024;
/// Offset of `xmm0` in the legacy FXSAVE region.
const XMM_OFFSET: usize = 160;
/// Offset of the XSAVE header's XSTATE_BV bitmap.
const XSTATE_BV_OFFSET: usize = 512;

/// Offsets of the XSAVE components in the standard format, from CPUID leaf 0xD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct XsaveLayout {
    /// Upper halves of `ymm0..15` (component 2).
    pub ymm_high: Option<usize>,
    /// `k0..k7` (component 5).
    pub opmask: Option<usize>,
    /// Upper halves of `zmm0..15` (component 6).
    pub zmm_high: Option<usize>,
    /// `zmm16..31` (component 7).
    pub zmm16: Option<usize>,
    /// The PKRU register (component 9).
    pub pkru: Option<usize>,
}

impl XsaveLayout {
    /// Asks the CPU where the components live.
    pub(super) fn from_cpuid() -> XsaveLayout {
        let offset = |component: u32| {
            // CPUID leaf 0xD exists on every x86-64 CPU that has XSAVE; on others it returns
            // zeros, which mean "absent".
            let leaf = std::arch::x86_64::__cpuid_count(0xd, component);
            (leaf.eax != 0 && leaf.ebx != 0).then_some(leaf.ebx as usize)
        };
        XsaveLayout {
            ymm_high: offset(2),
            opmask: offset(5),
            zmm_high: offset(6),
            zmm16: offset(7),
            pkru: offset(9),
        }
    }
}

/// Sets the thread's PKRU rights for `key`: the access-disable bit is `2 * key` and the
/// write-disable bit `2 * key + 1`. The whole XSAVE area is written back, because Linux resets
/// every component missing from the header to its initial state.
pub(super) fn set_key_rights(tid: i32, layout: &XsaveLayout, key: u32, rights: KeyRights) -> Result<(), String> {
    let offset = layout.pkru.ok_or("this CPU has no PKRU register")?;
    let mut area = read_area(tid)?;
    let pkru = area
        .get(offset..offset + 4)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or("the XSAVE area ends before PKRU")?;
    let updated = with_key_rights(pkru, key, rights);
    area[offset..offset + 4].copy_from_slice(&updated.to_le_bytes());
    let header = u64::from_le_bytes(area[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].try_into().map_err(|_| "short area")?);
    area[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&(header | 1 << 9).to_le_bytes());
    write_area(tid, &mut area)
}

/// Returns `pkru` with the two bits of `key` set for `rights`.
pub(super) fn with_key_rights(pkru: u32, key: u32, rights: KeyRights) -> u32 {
    let shift = 2 * (key % 16);
    let bits = match rights {
        KeyRights::NoAccess => 0b01,
        KeyRights::ReadOnly => 0b10,
        KeyRights::ReadWrite => 0b00,
    };
    (pkru & !(0b11 << shift)) | (bits << shift)
}

/// Overwrites the low `bytes.len()` bytes of vector register `index` of the thread.
pub(super) fn set_vector_register(tid: i32, layout: &XsaveLayout, index: usize, bytes: &[u8]) -> Result<(), String> {
    let mut area = read_area(tid)?;
    with_vector_register(&mut area, layout, index, bytes)?;
    write_area(tid, &mut area)
}

/// Writes `bytes` over the low bytes of vector register `index` in an XSAVE area and marks the
/// components it touched as in use. Bytes that fall in a component this CPU lacks must be
/// zero, because such a register part does not exist.
pub(super) fn with_vector_register(area: &mut [u8], layout: &XsaveLayout, index: usize, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > 64 || index >= 32 {
        return Err(format!("no {}-byte part of vector register {index}", bytes.len()))
    }
    // (first byte of the register, component number, offset of this register's part there)
    let parts: [(usize, u32, Option<usize>); 3] = if index < 16 {
        [
            (0, 1, Some(XMM_OFFSET + index * 16)),
            (16, 2, layout.ymm_high.map(|base| base + index * 16)),
            (32, 6, layout.zmm_high.map(|base| base + index * 32)),
        ]
    } else {
        let high = layout.zmm16.map(|base| base + (index - 16) * 64);
        [(0, 7, high), (16, 7, high.map(|offset| offset + 16)), (32, 7, high.map(|offset| offset + 32))]
    };
    let mut xstate_bv = area
        .get(XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8)
        .and_then(|header| header.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or("the XSAVE area ends before its header")?;
    for (part, (start, component, offset)) in parts.iter().enumerate() {
        let end = if part == 0 { 16 } else { start * 2 };
        let Some(piece) = bytes.get(*start..end.min(bytes.len())).filter(|piece| !piece.is_empty()) else { continue };
        let Some(offset) = offset else {
            if piece.iter().all(|&byte| byte == 0) {
                continue;
            }
            return Err(format!("this CPU has no XSAVE component {component} for vector register {index}"));
        };
        let target = area
            .get_mut(*offset..*offset + piece.len())
            .ok_or_else(|| format!("the XSAVE area ends before component {component}"))?;
        target.copy_from_slice(piece);
        xstate_bv |= 1 << component;
    }
    area[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&xstate_bv.to_le_bytes());
    Ok(())
}

fn read_area(tid: i32) -> Result<Vec<u8>, String> {
    let mut area = vec![0u8; XSAVE_BUFFER_LEN];
    let mut iov = libc::iovec { iov_base: area.as_mut_ptr().cast(), iov_len: area.len() };
    // SAFETY: `iov` describes `area`, which stays alive for the call; the kernel shortens
    // `iov_len` to what it wrote.
    let result = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, tid, NT_X86_XSTATE as usize, &mut iov as *mut _) };
    if result != 0 {
        return Err(format!("PTRACE_GETREGSET(NT_X86_XSTATE) failed: {}", std::io::Error::last_os_error()));
    }
    area.truncate(iov.iov_len);
    Ok(area)
}

fn write_area(tid: i32, area: &mut [u8]) -> Result<(), String> {
    let mut iov = libc::iovec { iov_base: area.as_mut_ptr().cast(), iov_len: area.len() };
    // SAFETY: `iov` describes `area`, a complete XSAVE image read from the same thread.
    let result = unsafe { libc::ptrace(libc::PTRACE_SETREGSET, tid, NT_X86_XSTATE as usize, &mut iov as *mut _) };
    if result != 0 {
        return Err(format!("PTRACE_SETREGSET(NT_X86_XSTATE) failed: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Reads the thread's vector registers.
pub(super) fn read_vector_registers(tid: i32, layout: &XsaveLayout) -> Result<VectorRegisters, String> {
    Ok(parse_xsave(&read_area(tid)?, layout))
}

/// Decodes the registers from an XSAVE area; components the header marks as in their initial
/// state, or that lie outside `area`, read as zero.
pub(super) fn parse_xsave(area: &[u8], layout: &XsaveLayout) -> VectorRegisters {
    let quadword = |offset: usize| -> u64 {
        area.get(offset..offset + 8)
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let xstate_bv = quadword(XSTATE_BV_OFFSET);
    let present = |component: u32| xstate_bv & (1 << component) != 0;

    let mut registers = VectorRegisters { zmm: vec![[0; 8]; 32], k: [0; 8] };
    for (index, zmm) in registers.zmm.iter_mut().enumerate().take(16) {
        if present(1) {
            zmm[0] = quadword(XMM_OFFSET + index * 16);
            zmm[1] = quadword(XMM_OFFSET + index * 16 + 8);
        }
        if let (true, Some(base)) = (present(2), layout.ymm_high) {
            zmm[2] = quadword(base + index * 16);
            zmm[3] = quadword(base + index * 16 + 8);
        }
        if let (true, Some(base)) = (present(6), layout.zmm_high) {
            for word in 0..4 {
                zmm[4 + word] = quadword(base + index * 32 + word * 8);
            }
        }
    }
    if let (true, Some(base)) = (present(7), layout.zmm16) {
        for (index, zmm) in registers.zmm.iter_mut().enumerate().skip(16) {
            for (word, value) in zmm.iter_mut().enumerate() {
                *value = quadword(base + (index - 16) * 64 + word * 8);
            }
        }
    }
    if let (true, Some(base)) = (present(5), layout.opmask) {
        for (index, k) in registers.k.iter_mut().enumerate() {
            *k = quadword(base + index * 8);
        }
    }
    registers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(area: &mut [u8], offset: usize, value: u64) {
        area[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    const LAYOUT: XsaveLayout =
        XsaveLayout {
            ymm_high: Some(576),
            opmask: Some(1088),
            zmm_high: Some(1152),
            zmm16: Some(1664),
            pkru: Some(2688),
        };

    #[test]
    fn xsave_components_by_header() {
        let mut area = vec![0u8; 2688];
        put(&mut area, XSTATE_BV_OFFSET, 0b1110_0110);
        put(&mut area, XMM_OFFSET + 16 * 3, 0x1111);
        put(&mut area, 576 + 16 * 3 + 8, 0x2222);
        put(&mut area, 1152 + 32 * 3 + 24, 0x3333);
        put(&mut area, 1664 + 64 * 2, 0x4444);
        put(&mut area, 1088 + 8 * 1, 0xff00);

        let registers = parse_xsave(&area, &LAYOUT);

        assert_eq!(registers.zmm[3], [0x1111, 0, 0, 0x2222, 0, 0, 0, 0x3333]);
        assert_eq!(registers.zmm[18][0], 0x4444);
        assert_eq!(registers.k[1], 0xff00);
    }

    #[test]
    fn xsave_initial_components_read_zero() {
        let mut area = vec![0u8; 2688];
        put(&mut area, XSTATE_BV_OFFSET, 0b10);
        put(&mut area, 576, 0x2222);
        put(&mut area, 1088, 0xff);

        let registers = parse_xsave(&area, &LAYOUT);

        assert_eq!(registers.zmm[0][2], 0);
        assert_eq!(registers.k[0], 0);
    }

    #[test]
    fn vector_register_write_places_parts() {
        let mut area = vec![0u8; 2688];
        put(&mut area, XSTATE_BV_OFFSET, 0b11);
        let bytes: Vec<u8> = (1..=64).collect();

        with_vector_register(&mut area, &LAYOUT, 3, &bytes).expect("all components exist");
        let registers = parse_xsave(&area, &LAYOUT);
        let expected: Vec<u64> =
            bytes.chunks(8).map(|word| u64::from_le_bytes(word.try_into().expect("8 bytes"))).collect();
        assert_eq!(registers.zmm[3].to_vec(), expected);
        assert_eq!(registers.zmm[2], [0; 8]);

        with_vector_register(&mut area, &LAYOUT, 17, &bytes[..32]).expect("all components exist");
        let registers = parse_xsave(&area, &LAYOUT);
        assert_eq!(registers.zmm[17].to_vec()[..4], expected[..4]);
        assert_eq!(registers.zmm[17].to_vec()[4..], [0; 4]);
        let xstate_bv = u64::from_le_bytes(area[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].try_into().expect("8 bytes"));
        assert_eq!(xstate_bv, 0b1100_0111);
    }

    #[test]
    fn vector_register_write_keeps_upper_bytes() {
        let mut area = vec![0u8; 2688];
        put(&mut area, XSTATE_BV_OFFSET, 0b110);
        put(&mut area, 576 + 16 * 5, 0x7777);
        with_vector_register(&mut area, &LAYOUT, 5, &[0xaa; 16]).expect("the XMM part exists");
        let registers = parse_xsave(&area, &LAYOUT);
        assert_eq!(registers.zmm[5][..3], [0xaaaa_aaaa_aaaa_aaaa, 0xaaaa_aaaa_aaaa_aaaa, 0x7777]);
    }

    #[test]
    fn vector_register_write_without_avx512() {
        let layout = XsaveLayout { zmm_high: None, zmm16: None, opmask: None, ..LAYOUT };
        let mut area = vec![0u8; 1088];
        put(&mut area, XSTATE_BV_OFFSET, 0b111);
        let mut bytes = vec![0x11u8; 32];
        bytes.resize(64, 0);
        with_vector_register(&mut area, &layout, 1, &bytes).expect("zeros above YMM need no component");
        assert_eq!(parse_xsave(&area, &layout).zmm[1][..4], [0x1111_1111_1111_1111; 4]);
        bytes[40] = 1;
        assert!(with_vector_register(&mut area, &layout, 1, &bytes).is_err());
        assert!(with_vector_register(&mut area, &layout, 16, &[1; 16]).is_err());
    }

    #[test]
    fn key_rights_bits() {
        assert_eq!(with_key_rights(0x5555_5554, 1, KeyRights::ReadWrite), 0x5555_5550);
        assert_eq!(with_key_rights(0x5555_5550, 1, KeyRights::NoAccess), 0x5555_5554);
        assert_eq!(with_key_rights(0x0000_0000, 2, KeyRights::ReadOnly), 0x0000_0020);
    }

    #[test]
    fn xsave_short_area_reads_zero() {
        let registers = parse_xsave(&[0u8; 100], &LAYOUT);
        assert_eq!(registers.zmm.len(), 32);
        assert!(registers.zmm.iter().all(|zmm| *zmm == [0; 8]));
    }
}
