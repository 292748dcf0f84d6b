//! The proxy-wasm ABI 0.2.1 host functions (module `env`), with Envoy's semantics.
//!
//! Signatures follow the imports of the Rust SDK (proxy-wasm 0.2.5, `hostcalls.rs`); pointers and
//! sizes are `u32` (wasm32), and every function returns a [`Status`]. Behaviour follows Envoy's
//! `source/extensions/common/wasm/context.cc` and proxy-wasm-cpp-host's `exports.cc`.

use super::memory::{self, Fail, HostResult, decode_map, read, return_bytes};
use super::state::{HostState, MetricKind, MetricValue, Status, text};
use super::{LocalReply, LogLevel};
use wasmtime::{Caller, Linker};

/// The gRPC status Envoy's local replies carry when the VM failed (`Unavailable`).
pub(crate) const GRPC_UNAVAILABLE: i32 = 14;

/// Defines every `env` host function this host implements.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    type C<'a> = Caller<'a, HostState>;
    linker.func_wrap("env", "proxy_log", |mut c: C<'_>, level: u32, ptr: u32, len: u32| {
        status(log(&mut c, level, ptr, len))
    })?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: C<'_>, ret: u32| {
        let level = c.data().log_level as u32;
        status(memory::write_u32(&mut c, ret, level))
    })?;
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut c: C<'_>, ret: u32| {
        let now = c.data().clock.realtime_nanos();
        status(memory::write_u64(&mut c, ret, now))
    })?;
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut c: C<'_>, ms: u32| {
        c.data_mut().tick_period = (ms > 0).then(|| std::time::Duration::from_millis(ms.into()));
        status(Ok(()))
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, kind: u32, start: u32, max: u32, ret_ptr: u32, ret_size: u32| {
            status(get_buffer_bytes(&mut c, kind, start, max, ret_ptr, ret_size))
        },
    )?;
    linker.func_wrap("env", "proxy_get_header_map_pairs", |mut c: C<'_>, map: u32, ret_ptr: u32, ret_size: u32| {
        status(get_header_map_pairs(&mut c, map, ret_ptr, ret_size))
    })?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", |mut c: C<'_>, map: u32, ptr: u32, len: u32| {
        status(set_header_map_pairs(&mut c, map, ptr, len))
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, map: u32, key: u32, key_len: u32, ret_ptr: u32, ret_size: u32| {
            status(get_header_map_value(&mut c, map, key, key_len, ret_ptr, ret_size))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, map: u32, key: u32, key_len: u32, value: u32, value_len: u32| {
            status(edit_header(&mut c, map, key, key_len, Edit::Replace(value, value_len)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, map: u32, key: u32, key_len: u32, value: u32, value_len: u32| {
            status(edit_header(&mut c, map, key, key_len, Edit::Add(value, value_len)))
        },
    )?;
    linker.func_wrap("env", "proxy_remove_header_map_value", |mut c: C<'_>, map: u32, key: u32, key_len: u32| {
        status(edit_header(&mut c, map, key, key_len, Edit::Remove))
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, path: u32, path_len: u32, ret_ptr: u32, ret_size: u32| {
            status(get_property(&mut c, path, path_len, ret_ptr, ret_size))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, path: u32, path_len: u32, value: u32, value_len: u32| {
            status(set_property(&mut c, path, path_len, value, value_len))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, key: u32, key_len: u32, ret_ptr: u32, ret_size: u32, ret_cas: u32| {
            status(get_shared_data(&mut c, key, key_len, ret_ptr, ret_size, ret_cas))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C<'_>, key: u32, key_len: u32, value: u32, value_len: u32, cas: u32| {
            status(set_shared_data(&mut c, key, key_len, value, value_len, cas))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         code: u32,
         details: u32,
         details_len: u32,
         body: u32,
         body_len: u32,
         headers: u32,
         headers_len: u32,
         grpc_status: i32| {
            let reply = LocalReplyArgs {
                code,
                details: (details, details_len),
                body: (body, body_len),
                headers: (headers, headers_len),
                grpc_status,
            };
            status(send_local_response(&mut c, reply))
        },
    )?;
    linker.func_wrap("env", "proxy_continue_stream", |mut c: C<'_>, stream: u32| {
        status(continue_stream(&mut c, stream))
    })?;
    linker.func_wrap("env", "proxy_close_stream", |_: C<'_>, stream: u32| {
        // The stream types are HttpRequest, HttpResponse, Downstream and Upstream.
        status(if stream <= 3 { Ok(()) } else { Err(Status::BadArgument.into()) })
    })?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>,
         upstream: u32,
         upstream_len: u32,
         headers: u32,
         headers_len: u32,
         body: u32,
         body_len: u32,
         trailers: u32,
         trailers_len: u32,
         timeout_ms: u32,
         ret_token: u32| {
            let call = HttpCallArgs {
                upstream: (upstream, upstream_len),
                headers: (headers, headers_len),
                body: (body, body_len),
                trailers: (trailers, trailers_len),
                timeout_ms,
                ret_token,
            };
            status(http_call(&mut c, call))
        },
    )?;
    linker.func_wrap("env", "proxy_set_effective_context", |mut c: C<'_>, id: u32| {
        let state = c.data_mut();
        status(if state.has_context(id) {
            state.effective_context = id;
            Ok(())
        } else {
            Err(Status::BadArgument.into())
        })
    })?;
    linker.func_wrap("env", "proxy_done", |_: C<'_>| status(Ok(())))?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: u32, name: u32, name_len: u32, ret_id: u32| {
            status(define_metric(&mut c, kind, name, name_len, ret_id))
        },
    )?;
    linker
        .func_wrap("env", "proxy_get_metric", |mut c: C<'_>, id: u32, ret: u32| status(get_metric(&mut c, id, ret)))?;
    linker.func_wrap("env", "proxy_record_metric", |mut c: C<'_>, id: u32, value: u64| {
        status(record_metric(c.data_mut(), id, value))
    })?;
    linker.func_wrap("env", "proxy_increment_metric", |mut c: C<'_>, id: u32, offset: i64| {
        status(increment_metric(c.data_mut(), id, offset))
    })?;
    Ok(())
}

/// Turns a host function's outcome into the status the guest sees, or a trap.
fn status(result: HostResult) -> wasmtime::Result<u32> {
    match result {
        Ok(()) => Ok(Status::Ok as u32),
        Err(Fail::Status(status)) => Ok(status as u32),
        Err(Fail::BadPointer) => Ok(Status::InvalidMemoryAccess as u32),
        Err(Fail::Trap(error)) => Err(error),
    }
}

fn log(caller: &mut Caller<'_, HostState>, level: u32, ptr: u32, len: u32) -> HostResult {
    let level = LogLevel::from_raw(level).ok_or(Status::BadArgument)?;
    let message = text(&read(caller, ptr, len)?);
    caller.data_mut().log(level, message);
    Ok(())
}

fn get_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    start: u32,
    max: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> HostResult {
    let state = caller.data();
    let buffer: &[u8] = match kind {
        // Envoy has a callout body only while `proxy_on_http_call_response` reports a response.
        4 => match &state.callouts.response {
            Some(response) => &response.body,
            None => return Err(Status::NotFound.into()),
        },
        // The request body Envoy holds for the effective stream (none for the root context).
        0 => state.effective_stream().map_or(&[][..], |stream| &stream.request_body),
        6 => &state.vm_config,
        7 if state.plugin_config_visible => &state.plugin_config,
        // The response body, network data, gRPC messages and call data exist in Envoy but are
        // always empty here.
        1..=3 | 5 | 8 => &[],
        _ => return Err(Status::NotFound.into()),
    };
    // Clamp like proxy-wasm-cpp-host: never read past the end; nothing to copy is still Ok.
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(buffer.len());
    let end = start.saturating_add(usize::try_from(max).unwrap_or(usize::MAX)).min(buffer.len());
    let slice = buffer.get(start..end).unwrap_or_default().to_vec();
    if slice.is_empty() {
        return Ok(());
    }
    return_bytes(caller, &slice, ret_ptr, ret_size)
}

fn get_header_map_pairs(caller: &mut Caller<'_, HostState>, map: u32, ret_ptr: u32, ret_size: u32) -> HostResult {
    // Envoy serializes a missing map as an empty one here, unlike the single-value reads.
    let pairs = caller.data().readable_map(map)?.map(|map| map.entries().to_vec());
    let pairs = pairs.unwrap_or_default();
    let bytes = if pairs.is_empty() { Vec::new() } else { svidgate_core::headers::proxy_wasm_bytes(&pairs) };
    return_bytes(caller, &bytes, ret_ptr, ret_size)
}

fn set_header_map_pairs(caller: &mut Caller<'_, HostState>, map: u32, ptr: u32, len: u32) -> HostResult {
    let pairs = decode_map(&read(caller, ptr, len)?).ok_or(Status::BadArgument)?;
    caller.data_mut().writable_map(map)?.set_pairs(&pairs);
    Ok(())
}

fn get_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map: u32,
    key: u32,
    key_len: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> HostResult {
    let key = text(&read(caller, key, key_len)?);
    let state = caller.data();
    let Some(headers) = state.readable_map(map)? else {
        // A map that does not exist (yet, or any more) is an error, except while logging.
        let status = if state.in_log_phase() { Status::NotFound } else { Status::BadArgument };
        return Err(status.into());
    };
    let value = headers.first(&key).ok_or(Status::NotFound)?.to_string();
    return_bytes(caller, value.as_bytes(), ret_ptr, ret_size)
}

/// A change to one header of a map.
enum Edit {
    /// Append the value at (ptr, len).
    Add(u32, u32),
    /// Remove every entry, then append the value at (ptr, len).
    Replace(u32, u32),
    /// Remove every entry.
    Remove,
}

fn edit_header(caller: &mut Caller<'_, HostState>, map: u32, key: u32, key_len: u32, edit: Edit) -> HostResult {
    let key = text(&read(caller, key, key_len)?);
    let value = match edit {
        Edit::Add(ptr, len) | Edit::Replace(ptr, len) => text(&read(caller, ptr, len)?),
        Edit::Remove => String::new(),
    };
    let headers = caller.data_mut().writable_map(map)?;
    match edit {
        Edit::Add(..) => headers.add(&key, &value),
        Edit::Replace(..) => headers.replace(&key, &value),
        Edit::Remove => headers.remove(&key),
    }
    Ok(())
}

fn get_property(
    caller: &mut Caller<'_, HostState>,
    path: u32,
    path_len: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> HostResult {
    let path = read(caller, path, path_len)?;
    let value = caller.data().property(&path).ok_or(Status::NotFound)?.to_vec();
    return_bytes(caller, &value, ret_ptr, ret_size)
}

fn set_property(
    caller: &mut Caller<'_, HostState>,
    path: u32,
    path_len: u32,
    value: u32,
    value_len: u32,
) -> HostResult {
    let path = read(caller, path, path_len)?;
    let value = read(caller, value, value_len)?;
    // Envoy keeps module-set properties in the stream's filter state: the root context has none.
    let stream = caller.data_mut().effective_stream_mut().ok_or(Status::NotFound)?;
    stream.filter_state.insert(path, value);
    Ok(())
}

fn get_shared_data(
    caller: &mut Caller<'_, HostState>,
    key: u32,
    key_len: u32,
    ret_ptr: u32,
    ret_size: u32,
    ret_cas: u32,
) -> HostResult {
    let key = read(caller, key, key_len)?;
    let (value, cas) = caller.data().shared_data.get(&key).ok_or(Status::NotFound)?;
    let value = value.to_vec();
    return_bytes(caller, &value, ret_ptr, ret_size)?;
    memory::write_u32(caller, ret_cas, cas)
}

fn set_shared_data(
    caller: &mut Caller<'_, HostState>,
    key: u32,
    key_len: u32,
    value: u32,
    value_len: u32,
    cas: u32,
) -> HostResult {
    let key = read(caller, key, key_len)?;
    let value = read(caller, value, value_len)?;
    caller.data_mut().shared_data.set(&key, &value, cas)?;
    Ok(())
}

/// The guest's arguments to `proxy_send_local_response`, as (pointer, length) pairs.
struct LocalReplyArgs {
    code: u32,
    details: (u32, u32),
    body: (u32, u32),
    headers: (u32, u32),
    grpc_status: i32,
}

fn send_local_response(caller: &mut Caller<'_, HostState>, args: LocalReplyArgs) -> HostResult {
    let details = text(&read(caller, args.details.0, args.details.1)?);
    let body = read(caller, args.body.0, args.body.1)?;
    let headers = decode_map(&read(caller, args.headers.0, args.headers.1)?).ok_or(Status::BadArgument)?;
    let reply = LocalReply {
        status: args.code,
        // Envoy replaces whitespace in response code details (they end up in access logs).
        details: details.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect(),
        body,
        headers: headers.into_iter().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect(),
        grpc_status: args.grpc_status,
    };
    // From a root context there is no stream to answer: Envoy accepts the call and does nothing.
    // Envoy sends the first local reply; later ones find the response already started.
    if let Some(stream) = caller.data_mut().effective_stream_mut() {
        stream.local_reply.get_or_insert(reply);
    }
    Ok(())
}

/// The guest's arguments to `proxy_http_call`, as (pointer, length) pairs.
struct HttpCallArgs {
    upstream: (u32, u32),
    headers: (u32, u32),
    body: (u32, u32),
    trailers: (u32, u32),
    timeout_ms: u32,
    ret_token: u32,
}

fn http_call(caller: &mut Caller<'_, HostState>, args: HttpCallArgs) -> HostResult {
    let cluster = text(&read(caller, args.upstream.0, args.upstream.1)?);
    let headers = read(caller, args.headers.0, args.headers.1)?;
    let body = read(caller, args.body.0, args.body.1)?;
    // Trailers are not recorded, but like Envoy the host refuses them out of bounds.
    read(caller, args.trailers.0, args.trailers.1)?;
    // proxy-wasm-cpp-host writes a zero token first, to check the pointer before dispatching.
    memory::write_u32(caller, args.ret_token, 0)?;
    // A malformed map reads as no headers at all, which lacks the required ones.
    let headers = decode_map(&headers).unwrap_or_default();
    let token = caller.data_mut().callouts.dispatch(cluster, headers, body, args.timeout_ms)?;
    memory::write_u32(caller, args.ret_token, token)
}

fn continue_stream(caller: &mut Caller<'_, HostState>, stream_type: u32) -> HostResult {
    match stream_type {
        // HttpRequest or HttpResponse: Envoy drops its pointers to the request maps and body, and
        // resumes the stream once the callback returns; resuming the request passes on what the
        // filter held.
        0 | 1 => {
            if let Some(stream) = caller.data_mut().effective_stream_mut() {
                if stream_type == 0 {
                    stream.forward_request();
                }
                stream.release_request();
            }
            Ok(())
        }
        2 => Ok(()),
        3 => Err(Status::Unimplemented.into()),
        _ => Err(Status::BadArgument.into()),
    }
}

fn define_metric(caller: &mut Caller<'_, HostState>, kind: u32, name: u32, name_len: u32, ret_id: u32) -> HostResult {
    let kind = MetricKind::from_raw(kind).ok_or(Status::BadArgument)?;
    let name = text(&read(caller, name, name_len)?);
    let id = caller.data_mut().metrics.define(kind, &name);
    memory::write_u32(caller, ret_id, id)
}

fn get_metric(caller: &mut Caller<'_, HostState>, id: u32, ret: u32) -> HostResult {
    let value = match caller.data_mut().metrics.by_id_mut(id).ok_or(Status::NotFound)? {
        MetricValue::Counter(value) => *value,
        // Envoy's gauges are unsigned: a negative gauge reads back as its two's complement.
        MetricValue::Gauge(value) => *value as u64,
        MetricValue::Histogram(_) => return Err(Status::BadArgument.into()),
    };
    memory::write_u64(caller, ret, value)
}

fn record_metric(state: &mut HostState, id: u32, value: u64) -> HostResult {
    match state.metrics.by_id_mut(id).ok_or(Status::NotFound)? {
        // Envoy adds to a counter rather than setting it.
        MetricValue::Counter(total) => *total = total.wrapping_add(value),
        MetricValue::Gauge(gauge) => *gauge = value as i64,
        MetricValue::Histogram(values) => values.push(value),
    }
    Ok(())
}

fn increment_metric(state: &mut HostState, id: u32, offset: i64) -> HostResult {
    match state.metrics.by_id_mut(id).ok_or(Status::NotFound)? {
        // Counters only go up: Envoy rejects a zero or negative offset.
        MetricValue::Counter(total) if offset > 0 => *total = total.wrapping_add(offset.unsigned_abs()),
        MetricValue::Gauge(gauge) => *gauge = gauge.wrapping_add(offset),
        MetricValue::Counter(_) | MetricValue::Histogram(_) => {
            return Err(Status::BadArgument.into());
        }
    }
    Ok(())
}
