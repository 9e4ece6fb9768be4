//! Loading the library, finding the function and calling it with six integer arguments.

use std::ffi::{CStr, CString};
use std::path::Path;

/// A function of up to six integer or pointer arguments returning a 64-bit value. Under the
/// System V x86-64 ABI a function that takes fewer arguments ignores the extra registers.
pub type NativeFn = extern "C" fn(u64, u64, u64, u64, u64, u64) -> u64;

/// Opens `library` (a path, or a soname the dynamic linker searches for) and looks up
/// `symbol` in it. The library stays loaded for the life of the process.
pub fn resolve(library: &str, symbol: &str) -> Result<NativeFn, String> {
    // A bare file name that exists here is meant as a path, not as a soname to search for.
    let name = if !library.contains('/') && Path::new(library).is_file() {
        format!("./{library}")
    } else {
        library.to_string()
    };
    let name = CString::new(name).map_err(|_| format!("library name '{library}' contains a NUL byte"))?;
    let symbol_name = CString::new(symbol).map_err(|_| format!("symbol name '{symbol}' contains a NUL byte"))?;

    // SAFETY: both names are NUL-terminated; loading runs the library's initialisers, which
    // is what the user asked for.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("cannot load library '{library}': {}", last_dl_error()));
    }
    // SAFETY: clears the error state, so a null result below can be distinguished from a symbol
    // whose address is null.
    unsafe { libc::dlerror() };
    // SAFETY: `handle` is a live handle from dlopen and the name is NUL-terminated.
    let address = unsafe { libc::dlsym(handle, symbol_name.as_ptr()) };
    if address.is_null() {
        return Err(format!("cannot find symbol '{symbol}' in '{library}': {}", last_dl_error()));
    }
    // SAFETY: the user names a function taking up to six integer arguments; calling it with
    // this signature is the documented contract of `ffitrace call`.
    Ok(unsafe { std::mem::transmute::<*mut libc::c_void, NativeFn>(address) })
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl call.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        return "the symbol's address is null".to_string();
    }
    // SAFETY: checked non-null above; copied out before any other dl call.
    unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
}
