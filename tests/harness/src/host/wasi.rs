//! The slice of WASI preview 1 (`wasi_snapshot_preview1`) a module built with Rust std needs,
//! shared by the two hosts of this crate through [`WasiState`]:
//!
//! - the proxy-wasm host, modelled on what proxy-wasm-cpp-host gives Envoy's modules: no
//!   arguments and no environment, stdout and stderr become log lines, clocks read the plugin's
//!   clock, randomness is deterministic;
//! - the command runner [`crate::wasi_command`]: the process's arguments, environment, stdout,
//!   stderr, clocks and randomness.
//!
//! Neither has a file system (no preopened directories) or stdin. `proc_exit` ends the call with
//! a [`ProcExit`] error. Anything else the module imports traps when called.

use super::memory::{self, Fail, HostResult, read, read_u32};
use wasmtime::{Caller, Linker};

/// What a host gives a module through WASI.
pub(crate) trait WasiState: 'static {
    /// The arguments, `argv[0]` first, without NUL terminators.
    fn args(&self) -> &[Vec<u8>];
    /// The environment as `NAME=value` strings, without NUL terminators.
    fn environ(&self) -> &[Vec<u8>];
    /// Nanoseconds since the Unix epoch.
    fn realtime_nanos(&self) -> u64;
    /// Nanoseconds on a clock that never goes back.
    fn monotonic_nanos(&self) -> u64;
    /// Fills `buffer` with random bytes.
    fn fill_random(&mut self, buffer: &mut [u8]) -> std::io::Result<()>;
    /// Takes the module's output on stdout (`fd` 1) or stderr (`fd` 2).
    fn write_stdio(&mut self, fd: u32, bytes: &[u8]) -> std::io::Result<()>;
    /// Whether stdout (`fd` 1) or stderr (`fd` 2) is a terminal: the module's `isatty` (and so,
    /// for instance, libtest's `--color auto`) follows it.
    fn is_terminal(&self, fd: u32) -> bool;
}

/// The error that ends a call when the module calls `proc_exit(code)`.
#[derive(Debug)]
pub(crate) struct ProcExit(pub(crate) u32);

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the module called proc_exit({})", self.0)
    }
}

impl std::error::Error for ProcExit {}

/// WASI errno values (`wasi_snapshot_preview1::Errno`).
const SUCCESS: u32 = 0;
const BADF: u32 = 8;
const FAULT: u32 = 21;
const INVAL: u32 = 28;
const IO: u32 = 29;
const NOTSUP: u32 = 58;
const SPIPE: u32 = 70;

const REALTIME: u32 = 0;
const MONOTONIC: u32 = 1;

/// Defines the WASI functions these hosts implement.
pub(crate) fn add_to_linker<T: WasiState>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    const WASI: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, T>, fd: u32, iovs: u32, iovs_len: u32, ret: u32| {
            errno(fd_write(&mut c, fd, iovs, iovs_len, ret))
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, T>, ptr: u32, len: u32| {
            let mut bytes = vec![0; usize::try_from(len).unwrap_or_default()];
            if c.data_mut().fill_random(&mut bytes).is_err() {
                return errno(Ok(IO));
            }
            errno(memory::write(&mut c, ptr, &bytes).map(|()| SUCCESS))
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, T>, id: u32, _precision: u64, ret: u32| {
            let now = match id {
                REALTIME => c.data().realtime_nanos(),
                MONOTONIC => c.data().monotonic_nanos(),
                // Process and thread CPU time clocks are not provided, as in proxy-wasm-cpp-host.
                _ => return errno(Ok(NOTSUP)),
            };
            errno(memory::write_u64(&mut c, ret, now).map(|()| SUCCESS))
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: Caller<'_, T>, id: u32, ret: u32| {
            if id != REALTIME && id != MONOTONIC {
                return errno(Ok(NOTSUP));
            }
            errno(memory::write_u64(&mut c, ret, 1).map(|()| SUCCESS))
        },
    )?;
    linker.func_wrap(
        WASI,
        "args_get",
        |mut c: Caller<'_, T>, list: u32, buffer: u32| {
            let args = c.data().args().to_vec();
            errno(write_strings(&mut c, &args, list, buffer))
        },
    )?;
    linker.func_wrap(
        WASI,
        "args_sizes_get",
        |mut c: Caller<'_, T>, ret_count: u32, ret_size: u32| {
            let args = c.data().args().to_vec();
            errno(write_sizes(&mut c, &args, ret_count, ret_size))
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_get",
        |mut c: Caller<'_, T>, list: u32, buffer: u32| {
            let environ = c.data().environ().to_vec();
            errno(write_strings(&mut c, &environ, list, buffer))
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Caller<'_, T>, ret_count: u32, ret_size: u32| {
            let environ = c.data().environ().to_vec();
            errno(write_sizes(&mut c, &environ, ret_count, ret_size))
        },
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, T>, code: u32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(ProcExit(code)))
        },
    )?;
    linker.func_wrap(WASI, "sched_yield", |_: Caller<'_, T>| errno(Ok(SUCCESS)))?;
    linker.func_wrap(WASI, "fd_close", |_: Caller<'_, T>, _fd: u32| {
        errno(Ok(BADF))
    })?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |_: Caller<'_, T>, fd: u32, _offset: i64, _whence: u32, _ret: u32| {
            errno(Ok(if is_stdio(fd) { SPIPE } else { BADF }))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut c: Caller<'_, T>, fd: u32, ret: u32| errno(fd_fdstat_get(&mut c, fd, ret)),
    )?;
    // No preopened directories: wasi-libc stops enumerating them at the first EBADF.
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |_: Caller<'_, T>, _fd: u32, _ret: u32| errno(Ok(BADF)),
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_: Caller<'_, T>, _fd: u32, _ptr: u32, _len: u32| errno(Ok(BADF)),
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

/// Stores `strings` as `args_get` and `environ_get` do: a pointer per string at `list`, the
/// NUL-terminated strings one after the other at `buffer`.
fn write_strings<T>(
    caller: &mut Caller<'_, T>,
    strings: &[Vec<u8>],
    list: u32,
    buffer: u32,
) -> HostResult<u32> {
    let mut slot = list;
    let mut at = buffer;
    for string in strings {
        let mut bytes = string.clone();
        bytes.push(0);
        memory::write_u32(caller, slot, at)?;
        memory::write(caller, at, &bytes)?;
        slot = slot.checked_add(4).ok_or(Fail::BadPointer)?;
        let len = u32::try_from(bytes.len()).map_err(|_| Fail::BadPointer)?;
        at = at.checked_add(len).ok_or(Fail::BadPointer)?;
    }
    Ok(SUCCESS)
}

/// Stores the number of `strings` and the bytes they take with their NUL terminators, as
/// `args_sizes_get` and `environ_sizes_get` do.
fn write_sizes<T>(
    caller: &mut Caller<'_, T>,
    strings: &[Vec<u8>],
    ret_count: u32,
    ret_size: u32,
) -> HostResult<u32> {
    let count = u32::try_from(strings.len()).map_err(|_| Fail::BadPointer)?;
    let size = strings
        .iter()
        .map(|string| string.len().saturating_add(1))
        .fold(0, usize::saturating_add);
    let size = u32::try_from(size).map_err(|_| Fail::BadPointer)?;
    memory::write_u32(caller, ret_count, count)?;
    memory::write_u32(caller, ret_size, size)?;
    Ok(SUCCESS)
}

/// Gathers the `(ptr, len)` buffers at `iovs` and hands them to the host as stdout (1) or
/// stderr (2) output.
fn fd_write<T: WasiState>(
    caller: &mut Caller<'_, T>,
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
    if caller.data_mut().write_stdio(fd, &bytes).is_err() {
        return Ok(IO);
    }
    Ok(SUCCESS)
}

/// Describes stdout and stderr as write-only streams: character devices (terminals) where the
/// host says so, as proxy-wasm-cpp-host always does, otherwise of unknown type (pipes, files).
fn fd_fdstat_get<T: WasiState>(caller: &mut Caller<'_, T>, fd: u32, ret: u32) -> HostResult<u32> {
    if fd != 1 && fd != 2 {
        return Ok(BADF);
    }
    // struct fdstat { u8 filetype; u16 flags; u64 rights_base; u64 rights_inheriting } = 24 bytes.
    const UNKNOWN: u8 = 0;
    const CHARACTER_DEVICE: u8 = 2;
    const RIGHT_FD_WRITE: u64 = 1 << 6;
    let filetype = if caller.data().is_terminal(fd) {
        CHARACTER_DEVICE
    } else {
        UNKNOWN
    };
    let mut fdstat = vec![filetype, 0, 0, 0, 0, 0, 0, 0];
    fdstat.extend_from_slice(&RIGHT_FD_WRITE.to_le_bytes());
    fdstat.extend_from_slice(&0u64.to_le_bytes());
    memory::write(caller, ret, &fdstat)?;
    Ok(SUCCESS)
}
