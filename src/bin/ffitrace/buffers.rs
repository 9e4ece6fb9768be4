//! The traced buffers: allocating their pages, filling them and locating an address in them.

use ffitrace::PageRange;

use crate::args::{BufRef, Piece, Plan, Value, MAX_ARGS};

/// One allocated buffer: `size` bytes at `addr`, on the traced pages `pages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub addr: u64,
    pub size: u64,
    pub pages: PageRange,
}

impl Buffer {
    fn at(&self, offset: i64) -> u64 {
        self.addr.wrapping_add_signed(offset)
    }

    /// Reads the buffer's bytes in this process, or returns `None` when the native code
    /// unmapped them. Reads go through `/proc/self/mem`, so a missing page is an error
    /// instead of a crash.
    pub fn contents(&self) -> Option<Vec<u8>> {
        let view = ffitrace::ProcessView { pid: std::process::id() as i32 };
        view.read_memory(self.addr, self.size as usize)
    }
}

/// Finds the buffer whose pages hold `addr` and returns its index and the offset of `addr`
/// from the buffer's first byte (negative before it, `size` or more after it).
pub fn locate(buffers: &[Buffer], addr: u64) -> Option<(usize, i64)> {
    let index = buffers.iter().position(|buffer| buffer.pages.contains(addr))?;
    Some((index, addr.wrapping_sub(buffers[index].addr) as i64))
}

/// Maps every buffer of `plan` on pages of its own, each run of pages between two
/// inaccessible guard pages, and fills them. The mappings live as long as the process.
pub fn allocate(plan: &Plan, page_size: u64) -> Result<Vec<Buffer>, String> {
    let mut buffers = Vec::with_capacity(plan.buffers.len());
    for (index, spec) in plan.buffers.iter().enumerate() {
        let len = spec.pages(page_size) * page_size;
        let start = map_between_guards(len, page_size).map_err(|error| format!("buffer {index}: {error}"))?;
        let pages = PageRange { start, len };
        buffers.push(Buffer { addr: start + spec.start, size: spec.size, pages });
    }

    // Fills come last because a buffer may hold the address of a later one.
    for (spec, buffer) in plan.buffers.iter().zip(&buffers) {
        let bytes = fill_bytes(&spec.fill, &buffers);
        // SAFETY: the arguments were checked to fit `bytes` into the buffer's mapped bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.addr as *mut u8, bytes.len()) };
    }
    Ok(buffers)
}

/// Resolves a buffer's fill pieces into bytes, buffer references as little-endian addresses.
fn fill_bytes(fill: &[Piece], buffers: &[Buffer]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for piece in fill {
        match piece {
            Piece::Bytes(chunk) => bytes.extend_from_slice(chunk),
            Piece::Address(target) => bytes.extend_from_slice(&address(buffers, *target).to_le_bytes()),
        }
    }
    bytes
}

fn address(buffers: &[Buffer], target: BufRef) -> u64 {
    buffers.get(target.index).map_or(0, |buffer| buffer.at(target.offset))
}

/// Returns the six argument registers: each value, then zeros for the unused ones.
pub fn registers(values: &[Value], buffers: &[Buffer]) -> [u64; MAX_ARGS] {
    let mut registers = [0; MAX_ARGS];
    for (register, value) in registers.iter_mut().zip(values) {
        *register = match value {
            Value::Integer(number) => *number,
            Value::Pointer(target) => address(buffers, *target),
        };
    }
    registers
}

/// Maps `len` bytes of private anonymous read-write memory with an inaccessible page on each
/// side, and returns the address of the first read-write byte.
fn map_between_guards(len: u64, page_size: u64) -> Result<u64, std::io::Error> {
    let total = len + 2 * page_size;
    // SAFETY: a fresh anonymous mapping with no address hint touches no existing memory.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let start = base as u64 + page_size;
    // SAFETY: the range lies inside the mapping just made.
    if unsafe { libc::mprotect(start as *mut libc::c_void, len as usize, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::BufferSpec;

    #[test]
    fn allocates_fills_and_locates() {
        let page = ffitrace::page_size() as u64;
        let spec = |size, start, fill| BufferSpec { size, start, fill };
        let refer = Piece::Address(BufRef { index: 1, offset: -2 });
        let plan = Plan {
            values: vec![Value::Pointer(BufRef { index: 1, offset: 3 }), Value::Integer(9)],
            buffers: vec![spec(10, 0, vec![Piece::Bytes(vec![0xaa]), refer]), spec(4, page - 2, Vec::new())],
        };
        let buffers = allocate(&plan, page).unwrap();
        assert_eq!(buffers[1].pages.len, 2 * page);
        assert_eq!(buffers[1].addr, buffers[1].pages.start + page - 2);

        let mut expected = vec![0xaa];
        expected.extend_from_slice(&(buffers[1].addr - 2).to_le_bytes());
        expected.push(0);
        assert_eq!(buffers[0].contents(), Some(expected));
        assert_eq!(registers(&plan.values, &buffers), [buffers[1].addr + 3, 9, 0, 0, 0, 0]);

        assert_eq!(locate(&buffers, buffers[1].addr + 5), Some((1, 5)));
        assert_eq!(locate(&buffers, buffers[1].pages.start), Some((1, 2 - page as i64)));
        assert_eq!(locate(&buffers, buffers[0].pages.end()), None);
    }
}
