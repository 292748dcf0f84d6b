//! The host calls of every request that svidgate makes itself instead of through the SDK, to
//! spare the module allocations and copies the SDK makes around them: the request header map,
//! read in place (the SDK's `get_map_bytes` copies every name and value into a `String` and a
//! `Vec` of its own: `svidgate_core::headers`), and a property read without the two buffers the
//! SDK's `get_property` builds for the path (about 600 Wasm instructions per read).
#![expect(unsafe_code, reason = "host calls, made as the SDK makes them")]

use std::cell::RefCell;

use proxy_wasm::types::MapType;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    // Types as the ABI has them: the map type and the status are 32-bit integers.
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    fn proxy_get_property(path_data: *const u8, path_size: usize, return_value_data: *mut *mut u8, return_value_size: *mut usize) -> u32;
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const SERIALIZATION_FAILURE: u32 = 3;
const INTERNAL_FAILURE: u32 = 10;

thread_local! {
    /// The serialized property path of the last read, its buffer kept for the next.
    static PATH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The value of property `path`, `None` where Envoy has none or cannot give it (NotFound,
/// SerializationFailure, InternalFailure: the statuses the SDK's `get_property` returns); `Err`
/// with any other status, for which the caller lets the SDK's own call decide (it panics, as
/// before: see the crate docs).
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, u32> {
    PATH.with_borrow_mut(|serialized| {
        // As the SDK serializes it: the parts joined by NUL bytes.
        serialized.clear();
        for part in path {
            serialized.extend_from_slice(part.as_bytes());
            serialized.push(0);
        }
        serialized.pop();
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: the path is `serialized.len()` live bytes; the call writes only the two
        // out-pointers, which point to live locals.
        let status = unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &raw mut data, &raw mut size) };
        match status {
            OK if data.is_null() => Ok(None),
            // SAFETY: as in `map`.
            OK => Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) })),
            NOT_FOUND | SERIALIZATION_FAILURE | INTERNAL_FAILURE => Ok(None),
            status => Err(status),
        }
    })
}

/// The serialized map `map`, as Envoy writes it into memory it takes from the module; `None` if
/// Envoy answers with any status but Ok.
pub fn map(map: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the call writes only the two out-pointers, which point to live locals.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &raw mut data, &raw mut size) };
    if status != OK {
        return None;
    }
    if data.is_null() {
        // An empty map: no pairs.
        return Some(0u32.to_le_bytes().to_vec());
    }
    // SAFETY: Envoy allocated `size` bytes through the SDK's `proxy_on_memory_allocate` (a boxed
    // slice of exactly `size` bytes from this module's global allocator) and wrote all of them;
    // the module owns them now, as the SDK's own `get_map_bytes` takes them.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}
