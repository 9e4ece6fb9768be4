//! Names the function around a code address, from an ELF file's symbol tables. Only 64-bit
//! little-endian files are read, which covers every x86-64 shared object.

const PT_LOAD: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;

/// Returns the function containing `file_offset` of the ELF `image`, and the distance from
/// the function's start. `None` when the file is not ELF64 or no symbol covers the offset.
pub fn function_at(image: &[u8], file_offset: u64) -> Option<(String, u64)> {
    if image.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let vaddr = virtual_address(image, file_offset)?;
    let sections = sections(image)?;
    let mut best: Option<(String, u64)> = None;
    for section in &sections {
        if section.kind != SHT_SYMTAB && section.kind != SHT_DYNSYM {
            continue;
        }
        let strings = sections.get(section.link as usize)?;
        for symbol in image.get(section.offset as usize..)?.get(..section.size as usize)?.chunks_exact(24) {
            let kind = symbol[4] & 0xf;
            let value = u64_at(symbol, 8)?;
            let size = u64_at(symbol, 16)?;
            if (kind != STT_FUNC && kind != STT_GNU_IFUNC) || vaddr < value || vaddr - value >= size.max(1) {
                continue;
            }
            let name = string_at(image, strings.offset + u64::from(u32_at(symbol, 0)?))?;
            if !name.is_empty() && best.as_ref().map_or(true, |(_, delta)| vaddr - value < *delta) {
                best = Some((name, vaddr - value));
            }
        }
    }
    best
}

struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

/// Translates a file offset into the virtual address the loader gives it (before relocation).
fn virtual_address(image: &[u8], file_offset: u64) -> Option<u64> {
    let table = u64_at(image, 0x20)? as usize;
    let entry_size = usize::from(u16_at(image, 0x36)?);
    for index in 0..usize::from(u16_at(image, 0x38)?) {
        let header = image.get(table + index * entry_size..)?;
        let (offset, vaddr, file_size) = (u64_at(header, 8)?, u64_at(header, 16)?, u64_at(header, 32)?);
        if u32_at(header, 0)? == PT_LOAD && offset <= file_offset && file_offset - offset < file_size {
            return Some(file_offset - offset + vaddr);
        }
    }
    None
}

fn sections(image: &[u8]) -> Option<Vec<Section>> {
    let table = u64_at(image, 0x28)? as usize;
    let entry_size = usize::from(u16_at(image, 0x3a)?);
    let count = usize::from(u16_at(image, 0x3c)?);
    (0..count)
        .map(|index| {
            let header = image.get(table + index * entry_size..)?;
            Some(Section {
                kind: u32_at(header, 4)?,
                offset: u64_at(header, 0x18)?,
                size: u64_at(header, 0x20)?,
                link: u32_at(header, 0x28)?,
            })
        })
        .collect()
}

fn string_at(image: &[u8], offset: u64) -> Option<String> {
    let tail = image.get(offset as usize..)?;
    let end = tail.iter().position(|byte| *byte == 0)?;
    Some(String::from_utf8_lossy(&tail[..end]).into_owned())
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(offset..offset + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(offset..offset + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(offset..offset + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_elf64() {
        assert_eq!(function_at(b"", 0), None);
        assert_eq!(function_at(b"\x7fELF\x01\x01rest", 0), None);
        assert_eq!(function_at(b"\x7fELF\x02\x01", 0), None);
    }

    #[test]
    fn names_a_function_of_this_test_binary() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let code = function_at as *const () as usize as u64;
        let (path, offset) = crate::crash::module_at(&maps, code).unwrap();
        let image = std::fs::read(path).unwrap();
        let (name, delta) = function_at(&image, offset + 3).unwrap();
        assert!(name.contains("function_at"), "{name}");
        assert_eq!(delta, 3);
    }
}
