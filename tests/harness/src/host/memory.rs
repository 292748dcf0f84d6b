//! Guest memory access and the proxy-wasm wire formats (header maps, property paths).

use super::state::{HostState, Status};
use wasmtime::{Caller, Extern, Memory};

/// Why a host function did not complete with `Ok`.
pub(crate) enum Fail {
    /// A guest pointer or length was out of bounds: reported to the guest, not a trap.
    BadPointer,
    /// A proxy-wasm status other than `Ok`, returned to the guest.
    Status(Status),
    /// The guest must stop: it trapped re-entrantly (in its allocator) or asked to exit.
    Trap(wasmtime::Error),
}

impl From<Status> for Fail {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

impl From<wasmtime::Error> for Fail {
    fn from(error: wasmtime::Error) -> Self {
        Self::Trap(error)
    }
}

/// The result of a host function body.
pub(crate) type HostResult<T = ()> = Result<T, Fail>;

/// The guest's exported linear memory.
fn memory<T>(caller: &mut Caller<'_, T>) -> HostResult<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(Fail::Trap(wasmtime::Error::msg(
            "the module exports no `memory`",
        ))),
    }
}

/// The byte range `[ptr, ptr + len)` as `usize` bounds, if it does not overflow.
fn range(ptr: u32, len: u32) -> HostResult<std::ops::Range<usize>> {
    let start = usize::try_from(ptr).map_err(|_| Fail::BadPointer)?;
    let len = usize::try_from(len).map_err(|_| Fail::BadPointer)?;
    let end = start.checked_add(len).ok_or(Fail::BadPointer)?;
    Ok(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read<T>(caller: &mut Caller<'_, T>, ptr: u32, len: u32) -> HostResult<Vec<u8>> {
    let memory = memory(caller)?;
    let bytes = memory
        .data(&caller)
        .get(range(ptr, len)?)
        .ok_or(Fail::BadPointer)?;
    Ok(bytes.to_vec())
}

/// Reads a little-endian `u32` at `ptr`.
pub(crate) fn read_u32<T>(caller: &mut Caller<'_, T>, ptr: u32) -> HostResult<u32> {
    let bytes = read(caller, ptr, 4)?;
    let bytes = <[u8; 4]>::try_from(bytes.as_slice()).map_err(|_| Fail::BadPointer)?;
    Ok(u32::from_le_bytes(bytes))
}

/// Copies `bytes` into guest memory at `ptr`.
pub(crate) fn write<T>(caller: &mut Caller<'_, T>, ptr: u32, bytes: &[u8]) -> HostResult {
    let memory = memory(caller)?;
    let len = u32::try_from(bytes.len()).map_err(|_| Fail::BadPointer)?;
    let target = memory
        .data_mut(&mut *caller)
        .get_mut(range(ptr, len)?)
        .ok_or(Fail::BadPointer)?;
    target.copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian `u32` at `ptr`.
pub(crate) fn write_u32<T>(caller: &mut Caller<'_, T>, ptr: u32, value: u32) -> HostResult {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`.
pub(crate) fn write_u64<T>(caller: &mut Caller<'_, T>, ptr: u32, value: u64) -> HostResult {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the guest: copies them into a buffer the guest allocates and stores its
/// address and size at `ptr_ptr` and `size_ptr`.
///
/// Like proxy-wasm-cpp-host's `copyToPointerSize`, empty data is returned as a null pointer
/// (the Rust SDK then reports `None` for properties and buffers).
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_ptr: u32,
    size_ptr: u32,
) -> HostResult {
    let size = u32::try_from(bytes.len()).map_err(|_| Fail::Status(Status::InternalFailure))?;
    let ptr = if bytes.is_empty() {
        0
    } else {
        allocate(caller, size)?
    };
    if ptr != 0 {
        write(caller, ptr, bytes)?;
    }
    write_u32(caller, ptr_ptr, ptr)?;
    write_u32(caller, size_ptr, size)
}

/// Calls the guest's allocator (`proxy_on_memory_allocate`, or `malloc`) for `size` bytes.
fn allocate(caller: &mut Caller<'_, HostState>, size: u32) -> HostResult<u32> {
    let export = caller
        .get_export("proxy_on_memory_allocate")
        .or_else(|| caller.get_export("malloc"))
        .and_then(Extern::into_func);
    let Some(function) = export else {
        return Err(Fail::Trap(wasmtime::Error::msg(
            "the module exports neither `proxy_on_memory_allocate` nor `malloc`",
        )));
    };
    let allocate = function.typed::<u32, u32>(&caller)?;
    let ptr = allocate.call(&mut *caller, size)?;
    if ptr == 0 {
        return Err(Fail::Status(Status::InvalidMemoryAccess));
    }
    Ok(ptr)
}

/// Parses the proxy-wasm map format (`svidgate_core::headers::proxy_wasm_bytes` writes it): a `u32`
/// count, a `(u32 name length, u32 value length)` per pair, then every name and value followed by
/// a NUL byte; `None` if it is malformed.
pub(crate) fn decode_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let slice = bytes.get(at..at.checked_add(4)?)?;
        usize::try_from(u32::from_le_bytes(<[u8; 4]>::try_from(slice).ok()?)).ok()
    };
    let count = word(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let lengths = 4 + index * 8;
        let mut field = |len: usize| -> Option<String> {
            let end = data.checked_add(len)?;
            let text = super::state::text(bytes.get(data..end)?);
            data = end.checked_add(1)?;
            Some(text)
        };
        let name = field(word(lengths)?)?;
        let value = field(word(lengths + 4)?)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trips_through_the_wire_format() {
        let pairs = vec![
            (":path".to_string(), "/".to_string()),
            ("x-empty".to_string(), String::new()),
        ];
        let bytes = svidgate_core::headers::proxy_wasm_bytes(&pairs);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(decode_map(&bytes), Some(pairs));
        assert_eq!(decode_map(&[]), Some(vec![]));
        assert_eq!(decode_map(&[5, 0, 0, 0]), None);
    }
}
