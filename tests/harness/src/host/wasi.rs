//! The slice of WASI preview 1 (`wasi_snapshot_preview1`) a proxy-wasm module built with Rust
//! std needs, modelled on what proxy-wasm-cpp-host gives Envoy's modules.
//!
//! There is no file system, no environment and no arguments; stdout and stderr become log lines;
//! clocks read the plugin's clock; randomness is deterministic. Anything else the module imports
//! traps when called.

use super::memory::{self, Fail, HostResult, read, read_u32};
use super::state::HostState;
use wasmtime::{Caller, Linker};

/// WASI errno values (`wasi_snapshot_preview1::Errno`).
const SUCCESS: u32 = 0;
const BADF: u32 = 8;
const FAULT: u32 = 21;
const INVAL: u32 = 28;
const NOTSUP: u32 = 58;
const SPIPE: u32 = 70;

const REALTIME: u32 = 0;
const MONOTONIC: u32 = 1;

/// Defines the WASI functions this host implements.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    type C<'a> = Caller<'a, HostState>;
    const WASI: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: C<'_>, fd: u32, iovs: u32, iovs_len: u32, ret: u32| {
            errno(fd_write(&mut c, fd, iovs, iovs_len, ret))
        },
    )?;
    linker.func_wrap(WASI, "random_get", |mut c: C<'_>, ptr: u32, len: u32| {
        let mut bytes = vec![0; usize::try_from(len).unwrap_or_default()];
        c.data_mut().random.fill(&mut bytes);
        errno(memory::write(&mut c, ptr, &bytes).map(|()| SUCCESS))
    })?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: C<'_>, id: u32, _precision: u64, ret: u32| {
            let clock = c.data().clock;
            let now = match id {
                REALTIME => clock.realtime_nanos(),
                MONOTONIC => clock.monotonic_nanos(),
                // Process and thread CPU time clocks are not provided, as in proxy-wasm-cpp-host.
                _ => return errno(Ok(NOTSUP)),
            };
            errno(memory::write_u64(&mut c, ret, now).map(|()| SUCCESS))
        },
    )?;
    linker.func_wrap(WASI, "clock_res_get", |mut c: C<'_>, id: u32, ret: u32| {
        if id != REALTIME && id != MONOTONIC {
            return errno(Ok(NOTSUP));
        }
        errno(memory::write_u64(&mut c, ret, 1).map(|()| SUCCESS))
    })?;
    // No environment variables and no arguments: both lists are empty.
    for (get, sizes) in [
        ("environ_get", "environ_sizes_get"),
        ("args_get", "args_sizes_get"),
    ] {
        linker.func_wrap(WASI, get, |_: C<'_>, _list: u32, _buffer: u32| {
            errno(Ok(SUCCESS))
        })?;
        linker.func_wrap(
            WASI,
            sizes,
            |mut c: C<'_>, ret_count: u32, ret_size: u32| {
                let written = memory::write_u32(&mut c, ret_count, 0)
                    .and_then(|()| memory::write_u32(&mut c, ret_size, 0));
                errno(written.map(|()| SUCCESS))
            },
        )?;
    }
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: C<'_>, code: u32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the module called proc_exit({code})"
            )))
        },
    )?;
    linker.func_wrap(WASI, "sched_yield", |_: C<'_>| errno(Ok(SUCCESS)))?;
    linker.func_wrap(WASI, "fd_close", |_: C<'_>, _fd: u32| errno(Ok(BADF)))?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |_: C<'_>, fd: u32, _offset: i64, _whence: u32, _ret: u32| {
            errno(Ok(if is_stdio(fd) { SPIPE } else { BADF }))
        },
    )?;
    linker.func_wrap(WASI, "fd_fdstat_get", |mut c: C<'_>, fd: u32, ret: u32| {
        errno(fd_fdstat_get(&mut c, fd, ret))
    })?;
    // No preopened directories: wasi-libc stops enumerating them at the first EBADF.
    linker.func_wrap(WASI, "fd_prestat_get", |_: C<'_>, _fd: u32, _ret: u32| {
        errno(Ok(BADF))
    })?;
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_: C<'_>, _fd: u32, _ptr: u32, _len: u32| errno(Ok(BADF)),
    )?;
    Ok(())
}

/// Turns a WASI function's outcome into the errno the guest sees, or a trap.
fn errno(result: HostResult<u32>) -> wasmtime::Result<u32> {
    match result {
        Ok(errno) => Ok(errno),
        Err(Fail::BadPointer) => Ok(FAULT),
        Err(Fail::Status(_)) => Ok(INVAL),
        Err(Fail::Trap(error)) => Err(error),
    }
}

fn is_stdio(fd: u32) -> bool {
    fd <= 2
}

/// Gathers the `(ptr, len)` buffers at `iovs` and logs them as stdout (1) or stderr (2) output.
fn fd_write(
    caller: &mut Caller<'_, HostState>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    ret: u32,
) -> HostResult<u32> {
    if fd != 1 && fd != 2 {
        return Ok(BADF);
    }
    let mut bytes = Vec::new();
    for index in 0..iovs_len {
        let iov = index
            .checked_mul(8)
            .and_then(|offset| iovs.checked_add(offset))
            .ok_or(Fail::BadPointer)?;
        let ptr = read_u32(caller, iov)?;
        let len = read_u32(caller, iov.checked_add(4).ok_or(Fail::BadPointer)?)?;
        bytes.extend_from_slice(&read(caller, ptr, len)?);
    }
    let written = u32::try_from(bytes.len()).map_err(|_| Fail::BadPointer)?;
    memory::write_u32(caller, ret, written)?;
    caller.data_mut().write_stdio(fd, &bytes);
    Ok(SUCCESS)
}

/// Describes stdout and stderr as write-only character devices, like proxy-wasm-cpp-host.
fn fd_fdstat_get(caller: &mut Caller<'_, HostState>, fd: u32, ret: u32) -> HostResult<u32> {
    if fd != 1 && fd != 2 {
        return Ok(BADF);
    }
    // struct fdstat { u8 filetype; u16 flags; u64 rights_base; u64 rights_inheriting } = 24 bytes.
    const CHARACTER_DEVICE: u8 = 2;
    const RIGHT_FD_WRITE: u64 = 1 << 6;
    let mut fdstat = vec![CHARACTER_DEVICE, 0, 0, 0, 0, 0, 0, 0];
    fdstat.extend_from_slice(&RIGHT_FD_WRITE.to_le_bytes());
    fdstat.extend_from_slice(&0u64.to_le_bytes());
    memory::write(caller, ret, &fdstat)?;
    Ok(SUCCESS)
}
