//! The one host call svidgate makes itself instead of through the SDK: the request header map,
//! read in place. The SDK's `get_map_bytes` copies every name and value into a `String` and a
//! `Vec` of its own, two allocations per header on every request (`svidgate_core::headers`).
#![expect(unsafe_code, reason = "a host call, made as the SDK makes it")]

use proxy_wasm::types::MapType;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// Types as the ABI has them: the map type and the status are 32-bit integers.
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
}

/// The serialized map `map`, as Envoy writes it into memory it takes from the module; `None` if
/// Envoy answers with any status but Ok.
pub fn map(map: MapType) -> Option<Vec<u8>> {
    const OK: u32 = 0;
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
