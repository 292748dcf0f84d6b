//! Tests of the proxy-wasm host against a real module: `tests/fixtures/hostprobe`, built for
//! wasm32-wasip1 on first use. The probe reports what it saw through `x-probe-*` headers.

use anyhow::{Context as _, Result, anyhow, ensure};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use svidgate_harness::host::{Action, HttpCall, LocalReply, LogEntry, LogLevel, Module, Plugin, PluginOptions, Stream};

/// The probe module, built and compiled once for every test of this binary.
fn probe() -> Result<&'static Module> {
    static PROBE: OnceLock<Result<Module, String>> = OnceLock::new();
    PROBE
        .get_or_init(|| build_probe().map_err(|error| format!("{error:#}")))
        .as_ref()
        .map_err(|error| anyhow!("building the probe module: {error}"))
}

fn build_probe() -> Result<Module> {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostprobe");
    Module::load(&svidgate_harness::fixtures::build_wasm("hostprobe", &target_dir)?)
}

/// Starts the probe with a plugin configuration (see the probe's docs for the syntax).
fn start(plugin_config: &str) -> Result<Plugin> {
    start_with(PluginOptions { plugin_config: plugin_config.into(), ..PluginOptions::default() })
}

fn start_with(options: PluginOptions) -> Result<Plugin> {
    let plugin = probe()?.start(options)?;
    ensure!(plugin.configured(), "the probe did not configure: {:?}", plugin.logs());
    Ok(plugin)
}

/// Request headers for `path`, plus `extra`.
fn request<'a>(path: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![(":method", "GET"), (":path", path), (":authority", "example.com")];
    headers.extend_from_slice(extra);
    headers
}

/// The first request header `name` of the stream.
fn header<'s>(stream: &'s Stream<'_>, name: &str) -> Option<&'s str> {
    stream.request_header_values(name).first().copied()
}

fn response_header<'s>(stream: &'s Stream<'_>, name: &str) -> Option<&'s str> {
    let map = stream.response_header_map();
    map.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

fn has_log(logs: &[LogEntry], level: LogLevel, message: &str) -> bool {
    logs.iter().any(|entry| entry.level == level && entry.message == message)
}

fn nanos(time: SystemTime) -> Result<String> {
    Ok(time.duration_since(UNIX_EPOCH)?.as_nanos().to_string())
}

#[test]
fn start_passes_both_configuration_buffers_and_records_tick_period() -> Result<()> {
    let plugin = start_with(PluginOptions {
        vm_config: b"vm-1".to_vec(),
        plugin_config: b"name=alpha;tick=250".to_vec(),
        ..PluginOptions::default()
    })?;
    assert!(has_log(plugin.logs(), LogLevel::Info, "vm config: vm-1"));
    assert!(has_log(plugin.logs(), LogLevel::Info, "plugin config: name=alpha;tick=250"));
    assert_eq!(plugin.tick_period(), Some(Duration::from_millis(250)));
    assert_eq!(plugin.metric_names(), ["probe_requests", "probe_inflight", "probe_header_count", "probe_ticks"]);
    assert_eq!(plugin.counter("probe_requests"), Some(0));
    assert!(plugin.fuel_consumed_total() > 0);
    Ok(())
}

#[test]
fn configure_returning_false_leaves_the_plugin_unconfigured() -> Result<()> {
    let plugin = probe()?.start(PluginOptions { plugin_config: b"fail".to_vec(), ..PluginOptions::default() })?;
    assert!(!plugin.configured());
    assert_eq!(plugin.tick_period(), None);
    Ok(())
}

#[test]
fn header_maps_follow_envoy_semantics() -> Result<()> {
    let mut plugin = start("")?;
    let mut stream = plugin.stream();
    let headers = [
        ("X-Multi", "a"),
        ("x-multi", "b"),
        ("X-Remove-Me", "1"),
        ("x-remove-me", "2"),
        ("x-replace-me", "old-1"),
        ("X-Replace-Me", "old-2"),
        // A pseudo-header after regular ones still lands ahead of them.
        (":scheme", "https"),
    ];
    let action = stream.request_headers(&request("/headers", &headers), true)?;
    assert_eq!(action, Action::Continue);
    // The probe reads the map after adding its two first x-probe headers.
    assert_eq!(header(&stream, "x-probe-count"), Some("12"));
    assert_eq!(header(&stream, "x-probe-num-headers"), Some("10"));
    assert_eq!(header(&stream, "x-probe-first"), Some(":method"));
    // Envoy answers a single-value read of a repeated header with its first value.
    assert_eq!(header(&stream, "x-probe-multi"), Some("a"));
    assert_eq!(stream.request_header_values("X-MULTI"), ["a", "b"]);
    assert_eq!(header(&stream, "x-probe-missing"), Some("<none>"));
    assert!(stream.request_header_values("x-remove-me").is_empty());
    assert_eq!(stream.request_header_values("x-replace-me"), ["replaced"]);
    assert_eq!(stream.request_header_values("x-fresh"), ["new"]);
    assert_eq!(stream.request_header_values("x-added"), ["1", "2"]);
    let names: Vec<&str> = stream.request_header_map().iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.get(..5), Some(&[":method", ":path", ":authority", ":scheme", ":probe-pseudo"][..]));
    assert!(names.iter().all(|name| *name == name.to_ascii_lowercase()), "{names:?}");
    stream.finish()
}

#[test]
fn response_headers_reach_the_module_after_the_request() -> Result<()> {
    let mut plugin = start("")?;
    let mut stream = plugin.stream();
    stream.request_headers(&request("/", &[]), true)?;
    let response = [(":status", "200"), ("Server", "upstream"), ("content-type", "text/plain")];
    assert_eq!(stream.response_headers(&response, false)?, Action::Continue);
    assert_eq!(response_header(&stream, "x-probe-status"), Some("200"));
    assert_eq!(response_header(&stream, "x-probe-num-headers"), Some("3"));
    assert_eq!(response_header(&stream, "server"), None);
    stream.finish()?;
    assert_eq!(plugin.gauge("probe_inflight"), Some(0));
    Ok(())
}

#[test]
fn a_response_without_request_headers_does_not_reach_the_module() -> Result<()> {
    let mut plugin = start("")?;
    let mut stream = plugin.stream();
    assert_eq!(stream.response_headers(&[(":status", "200")], true)?, Action::Continue);
    assert_eq!(stream.response_header_map(), [(":status".to_string(), "200".to_string())]);
    Ok(())
}

#[test]
fn header_maps_are_only_reachable_while_envoy_exposes_them() -> Result<()> {
    let mut plugin = start("")?;
    let mut stream = plugin.stream();
    // Reading response headers during the request phase: Envoy answers BadArgument, the SDK panics.
    let error = stream.request_headers(&request("/response-too-early", &[]), true).err();
    let error = error.context("expected a trap")?;
    assert!(format!("{error:#}").contains("proxy_on_request_headers"), "{error:#}");
    let fail_closed = LocalReply {
        status: 503,
        details: "wasm_fail_stream".into(),
        body: Vec::new(),
        headers: Vec::new(),
        grpc_status: 14,
    };
    assert_eq!(stream.local_reply(), Some(&fail_closed));
    let panic = plugin.logs().iter().find(|entry| entry.level == LogLevel::Critical);
    let panic = panic.context("the SDK logs panics at Critical")?;
    assert!(panic.message.contains("unexpected status: 2"), "{}", panic.message);
    Ok(())
}

#[test]
fn properties_are_found_or_not_found() -> Result<()> {
    let mut plugin = start("")?;
    plugin.set_property(&["source", "address"], "10.0.0.1:4321");
    plugin.set_property(&["response", "code"], 200i64.to_le_bytes());
    let mut stream = plugin.stream();
    stream.request_headers(&request("/properties", &[]), true)?;
    assert_eq!(header(&stream, "x-probe-source"), Some("10.0.0.1:4321"));
    assert_eq!(header(&stream, "x-probe-absent"), Some("<none>"));
    assert_eq!(header(&stream, "x-probe-code"), Some("200"));
    // A property the module sets is visible to the same stream (Envoy's filter state).
    assert_eq!(header(&stream, "x-probe-state"), Some("from-module"));
    stream.finish()?;

    plugin.remove_property(&["source", "address"]);
    let mut stream = plugin.stream();
    stream.request_headers(&request("/properties", &[]), true)?;
    assert_eq!(header(&stream, "x-probe-source"), Some("<none>"));
    stream.finish()
}

#[test]
fn local_replies_are_recorded_on_the_stream() -> Result<()> {
    let mut plugin = start("")?;
    let mut stream = plugin.stream();
    assert_eq!(stream.request_headers(&request("/deny", &[]), true)?, Action::Pause);
    let expected = LocalReply {
        status: 403,
        details: String::new(),
        body: b"denied by probe".to_vec(),
        headers: vec![("x-deny-reason".into(), "policy".into()), ("content-type".into(), "text/plain".into())],
        grpc_status: -1,
    };
    assert_eq!(stream.local_reply(), Some(&expected));
    stream.finish()?;

    let mut stream = plugin.stream();
    assert_eq!(stream.request_headers(&request("/grpc-deny", &[]), true)?, Action::Pause);
    let reply = stream.local_reply().context("a gRPC local reply")?;
    assert_eq!((reply.status, reply.grpc_status, reply.body.as_slice()), (200, 7, &b"no"[..]));

    let mut other = plugin.stream();
    other.request_headers(&request("/", &[]), true)?;
    assert_eq!(other.local_reply(), None);
    Ok(())
}

#[test]
fn metrics_are_kept_by_name() -> Result<()> {
    let mut plugin = start("")?;
    for extra in [0, 1, 2] {
        let headers: Vec<(&str, &str)> = [("x-a", "1"), ("x-b", "2")].into_iter().take(extra).collect();
        let mut stream = plugin.stream();
        stream.request_headers(&request("/", &headers), true)?;
        if extra == 0 {
            stream.response_headers(&[(":status", "200")], true)?;
        }
    }
    let mut stream = plugin.stream();
    stream.request_headers(&request("/metrics", &[]), true)?;
    assert_eq!(header(&stream, "x-probe-requests"), Some("4"));
    assert_eq!(plugin.counter("probe_requests"), Some(4));
    assert_eq!(plugin.gauge("probe_inflight"), Some(3));
    assert_eq!(plugin.histogram("probe_header_count"), Some(&[3, 4, 5, 3][..]));
    assert_eq!(plugin.counter("probe_inflight"), None, "a gauge is not a counter");
    assert_eq!(plugin.counter("no_such_metric"), None);
    Ok(())
}

#[test]
fn the_module_sees_the_plugin_clock() -> Result<()> {
    let start_time = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    let mut plugin = start_with(PluginOptions { now: Some(start_time), ..PluginOptions::default() })?;
    // (proxy time, SystemTime::now(), Instant elapsed since the previous /time request)
    let seen = |plugin: &mut Plugin| -> Result<[String; 3]> {
        let mut stream = plugin.stream();
        stream.request_headers(&request("/time", &[]), true)?;
        let value = |name: &str| header(&stream, name).unwrap_or_default().to_string();
        Ok([value("x-probe-proxy-time"), value("x-probe-std-time"), value("x-probe-since-last-ms")])
    };
    let expected = nanos(start_time)?;
    assert_eq!(seen(&mut plugin)?, [expected.clone(), expected, "<first>".into()]);

    plugin.advance_time(Duration::from_millis(90_500));
    assert_eq!(plugin.now(), start_time + Duration::from_millis(90_500));
    let expected = nanos(start_time + Duration::from_millis(90_500))?;
    let [proxy, std, since] = seen(&mut plugin)?;
    assert_eq!([proxy, std], [expected.clone(), expected]);
    // The monotonic clock also runs in real time between the two requests (as in Envoy): a
    // loaded machine adds a few milliseconds to the 90.5 s the test advanced.
    let since_ms = |since: &str| -> Result<u64> { Ok(since.parse()?) };
    assert!((90_500..91_500).contains(&since_ms(&since)?), "{since}");

    // The wall clock can go back; the monotonic clock behind Instant does not.
    let earlier = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    plugin.set_time(earlier);
    let expected = nanos(earlier)?;
    let [proxy, std, since] = seen(&mut plugin)?;
    assert_eq!([proxy, std], [expected.clone(), expected]);
    assert!(since_ms(&since)? < 1_000, "{since}");
    plugin.set_time(earlier + Duration::from_secs(2));
    let [_, _, since] = seen(&mut plugin)?;
    assert!((2_000..3_000).contains(&since_ms(&since)?), "{since}");
    Ok(())
}

#[test]
fn ticks_run_on_the_root_context() -> Result<()> {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut plugin =
        start_with(PluginOptions { plugin_config: b"tick=1000".to_vec(), now: Some(now), ..PluginOptions::default() })?;
    plugin.tick()?;
    plugin.advance_time(Duration::from_secs(1));
    plugin.tick()?;
    assert_eq!(plugin.counter("probe_ticks"), Some(2));
    let ticks: Vec<String> =
        plugin.take_logs().into_iter().map(|e| e.message).filter(|m| m.starts_with("tick")).collect();
    assert_eq!(
        ticks,
        [format!("tick at {}", nanos(now)?), format!("tick at {}", nanos(now + Duration::from_secs(1))?)]
    );
    assert!(plugin.logs().is_empty());
    Ok(())
}

#[test]
fn logs_capture_levels_and_standard_streams() -> Result<()> {
    let mut plugin = start("")?;
    plugin.take_logs();
    plugin.stream().request_headers(&request("/logs", &[]), true)?;
    let logs = plugin.take_logs();
    for (level, message) in [
        (LogLevel::Trace, "level trace"),
        (LogLevel::Debug, "level debug"),
        (LogLevel::Info, "level info"),
        (LogLevel::Warn, "level warn"),
        (LogLevel::Error, "level error"),
        (LogLevel::Info, "to stdout"),
        (LogLevel::Error, "to stderr"),
        // Output without a newline is flushed when the callback returns.
        (LogLevel::Error, "partial stderr line"),
    ] {
        assert!(has_log(&logs, level, message), "missing {level:?} {message:?} in {logs:?}");
    }

    // Envoy drops lines below its log level.
    let mut quiet = start_with(PluginOptions { log_level: Some(LogLevel::Warn), ..PluginOptions::default() })?;
    quiet.stream().request_headers(&request("/logs", &[]), true)?;
    let levels: Vec<LogLevel> = quiet.logs().iter().map(|entry| entry.level).collect();
    assert!(levels.iter().all(|level| *level >= LogLevel::Warn), "{:?}", quiet.logs());
    assert!(has_log(quiet.logs(), LogLevel::Warn, "level warn"));
    assert!(has_log(quiet.logs(), LogLevel::Error, "to stderr"));
    Ok(())
}

#[test]
fn finishing_a_stream_logs_then_destroys_the_context() -> Result<()> {
    let mut plugin = start("")?;
    let mut stream = plugin.stream();
    let id = stream.id();
    assert_eq!(id, 2, "the root context is 1, streams come next");
    stream.request_headers(&request("/lifecycle", &[]), true)?;
    assert_eq!(header(&stream, "x-probe-context"), Some("2"));
    stream.finish()?;
    let order: Vec<String> = plugin
        .take_logs()
        .into_iter()
        .map(|entry| entry.message)
        .filter(|message| message.starts_with("on_"))
        .collect();
    // In the access log phase the module still reads the request headers.
    assert_eq!(order, [format!("on_log {id} path=/lifecycle"), format!("on_done {id}"), format!("on_delete {id}")]);
    assert_eq!(plugin.stream().id(), 3);
    Ok(())
}

#[test]
fn a_trap_crashes_the_vm() -> Result<()> {
    let mut plugin = start("")?;
    let mut stream = plugin.stream();
    let error = stream.request_headers(&request("/panic", &[]), true).err().context("expected a trap")?;
    // The error names the callback and quotes the panic message the SDK logged.
    let message = error.to_string();
    assert!(message.starts_with("proxy_on_request_headers(2) trapped"), "{message}");
    assert!(message.contains("probe panic requested"), "{message}");
    assert_eq!(stream.local_reply().map(|reply| reply.status), Some(503));
    assert!(plugin.logs().iter().any(|e| e.level == LogLevel::Critical && e.message.contains("probe panic requested")));

    let error = plugin.tick().err().context("a crashed VM refuses calls")?;
    assert!(error.to_string().contains("vm crashed"), "{error:#}");
    let mut stream = plugin.stream();
    let error = stream.request_headers(&request("/", &[]), true).err().context("a crashed VM refuses streams")?;
    assert!(error.to_string().contains("vm crashed"), "{error:#}");
    assert_eq!(stream.local_reply().map(|reply| reply.details.as_str()), Some("wasm_fail_stream"));
    Ok(())
}

#[test]
fn proc_exit_is_a_trap_that_names_the_exit_code() -> Result<()> {
    let mut plugin = start("")?;
    let error = plugin.stream().request_headers(&request("/exit", &[]), true).err().context("expected a trap")?;
    assert!(format!("{error:#}").contains("proc_exit(3)"), "{error:#}");
    Ok(())
}

#[test]
fn shared_data_checks_cas() -> Result<()> {
    let mut plugin = start("")?;
    let mut stream = plugin.stream();
    stream.request_headers(&request("/shared", &[]), true)?;
    assert_eq!(header(&stream, "x-probe-shared-before"), Some("none"));
    assert_eq!(header(&stream, "x-probe-stale-cas"), Some("mismatch"));
    assert_eq!(header(&stream, "x-probe-shared"), Some("one->three"));
    Ok(())
}

#[test]
fn http_calls_from_a_tick_are_recorded_until_answered() -> Result<()> {
    let mut plugin = start("cluster=authz;body=hello")?;
    plugin.tick()?;
    let logs = plugin.take_logs();
    assert!(has_log(&logs, LogLevel::Info, r#"dispatch to "authz": Ok(1)"#), "{logs:?}");
    let expected = HttpCall {
        token: 1,
        cluster: "authz".into(),
        headers: [(":method", "POST"), (":path", "/lookup"), (":authority", "authz.local"), ("x-probe", "1")]
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .to_vec(),
        body: b"hello".to_vec(),
        timeout: Duration::from_millis(1500),
    };
    assert_eq!(plugin.http_calls(), std::slice::from_ref(&expected));

    plugin.tick()?;
    let taken = plugin.take_http_calls();
    let tokens: Vec<u32> = taken.iter().map(|call| call.token).collect();
    assert_eq!(tokens, [1, 2]);
    assert_eq!(taken.first(), Some(&expected));
    assert!(plugin.http_calls().is_empty());
    // Taken calls are still outstanding: the test answers them later.
    plugin.respond_http_call(2, &[(":status", "200")], b"")?;
    plugin.fail_http_call(1)?;
    assert!(plugin.respond_http_call(1, &[(":status", "200")], b"").is_err());
    Ok(())
}

#[test]
fn an_http_call_response_is_readable_only_during_its_callback() -> Result<()> {
    let mut plugin = start("cluster=authz")?;
    plugin.tick()?;
    let token = plugin.http_calls().first().context("a dispatched call")?.token;
    plugin.take_logs();
    let fuel_before = plugin.fuel_consumed_total();
    let headers = [(":status", "200"), ("X-Multi", "a"), ("x-multi", "b"), ("content-type", "text/plain")];
    plugin.respond_http_call(token, &headers, b"allow:ok")?;
    assert!(plugin.fuel_consumed_total() > fuel_before);
    assert!(plugin.http_calls().is_empty());
    let logs: Vec<String> = plugin.take_logs().into_iter().map(|e| e.message).collect();
    assert_eq!(
        logs,
        [
            format!("response {token}: headers=4 body=8 trailers=0"),
            // Names lower-cased, repeats kept; a single-value read gives the first value.
            format!("response {token} pairs: :status=200,x-multi=a,x-multi=b,content-type=text/plain"),
            format!(r#"response {token} values: Some("200") Some("a") None"#),
            // The body honours start and max size, and reading past its end gives nothing.
            format!("response {token} body: Ok allow:ok [2..7]=low:o [past end]=<none>"),
        ]
    );
    // The response is gone once the callback returned.
    plugin.tick()?;
    assert!(has_log(plugin.logs(), LogLevel::Info, "between responses: pairs=0 body=NotFound <none>"));
    let error = plugin.respond_http_call(token, &headers, b"again").err().context("a call is answered once")?;
    assert!(error.to_string().contains("no outstanding HTTP call"), "{error:#}");
    Ok(())
}

#[test]
fn a_failed_http_call_reaches_the_module_without_a_response() -> Result<()> {
    let mut plugin = start("cluster=authz")?;
    plugin.tick()?;
    plugin.take_logs();
    plugin.fail_http_call(1)?;
    let logs: Vec<String> = plugin.take_logs().into_iter().map(|e| e.message).collect();
    assert_eq!(
        logs,
        [
            "response 1: headers=0 body=0 trailers=0",
            "response 1 pairs: ",
            "response 1 body: NotFound <none> [2..7]=<none> [past end]=<none>",
        ]
    );
    assert!(plugin.fail_http_call(1).is_err());
    assert!(plugin.fail_http_call(7).is_err(), "never dispatched");
    Ok(())
}

#[test]
fn reading_a_header_of_a_failed_http_call_crashes_the_vm() -> Result<()> {
    // Envoy has no response header map for a failed call: BadArgument, on which the SDK panics.
    let mut plugin = start("cluster=authz;strict")?;
    plugin.tick()?;
    plugin.tick()?;
    plugin.respond_http_call(1, &[(":status", "503")], b"no healthy upstream")?;
    let error = plugin.fail_http_call(2).err().context("expected a trap")?;
    let message = error.to_string();
    assert!(message.starts_with("proxy_on_http_call_response(1) trapped"), "{message}");
    assert!(message.contains("unexpected status: 2"), "{message}");
    let error = plugin.tick().err().context("a crashed VM refuses calls")?;
    assert!(error.to_string().contains("vm crashed"), "{error:#}");
    Ok(())
}

#[test]
fn a_trap_in_the_http_call_response_crashes_the_vm() -> Result<()> {
    let mut plugin = start("cluster=authz")?;
    plugin.tick()?;
    plugin.tick()?;
    let error = plugin.respond_http_call(1, &[(":status", "200")], b"panic").err().context("expected a trap")?;
    assert!(error.to_string().contains("probe panic in callout response 1"), "{error:#}");
    let error =
        plugin.respond_http_call(2, &[(":status", "200")], b"").err().context("a crashed VM refuses responses")?;
    assert!(error.to_string().contains("vm crashed"), "{error:#}");
    Ok(())
}

#[test]
fn http_calls_need_a_known_cluster_and_the_required_pseudo_headers() -> Result<()> {
    // (plugin configuration, known clusters, what the dispatch returns)
    let cases: [(&str, Option<&[&str]>, &str); 9] = [
        ("cluster=authz", None, "Ok(1)"),
        ("cluster=authz;omit=x-probe", None, "Ok(1)"),
        ("cluster=authz;omit=:authority", None, "Err(BadArgument)"),
        ("cluster=authz;omit=:path", None, "Err(BadArgument)"),
        ("cluster=authz;omit=:method", None, "Err(BadArgument)"),
        ("cluster=", None, "Err(BadArgument)"),
        ("cluster=authz", Some(&["authz"]), "Ok(1)"),
        ("cluster=other", Some(&["authz"]), "Err(BadArgument)"),
        // Envoy reads the timeout as an int: 2^31 ms turns negative and is refused.
        ("cluster=authz;timeout=2147483648", None, "Err(BadArgument)"),
    ];
    for (config, clusters, expected) in cases {
        let mut plugin = start_with(PluginOptions {
            plugin_config: config.into(),
            clusters: clusters.map(|names| names.iter().map(|name| name.to_string()).collect()),
            ..PluginOptions::default()
        })?;
        plugin.tick()?;
        let outcome = plugin
            .logs()
            .iter()
            .find_map(|entry| entry.message.strip_prefix("dispatch to "))
            .and_then(|rest| rest.split_once(": "))
            .map(|(_, outcome)| outcome.to_string());
        assert_eq!(outcome.as_deref(), Some(expected), "{config} {clusters:?}");
        assert_eq!(plugin.http_calls().len(), usize::from(expected.starts_with("Ok")), "{config}");
    }
    let mut plugin = start("cluster=authz;timeout=0")?;
    plugin.tick()?;
    let call = plugin.http_calls().first().context("a dispatched call")?;
    assert_eq!(call.timeout, Duration::ZERO, "no timeout");
    Ok(())
}

#[test]
fn an_http_call_from_a_stream_is_answered_through_the_root_context() -> Result<()> {
    let mut plugin = start("")?;
    let mut stream = plugin.stream();
    let id = stream.id();
    let action = stream.request_headers(&request("/http-call", &[]), true)?;
    assert_eq!(action, Action::Pause);
    assert_eq!(header(&stream, "x-probe-http-call"), Some("Ok(1)"));
    let calls = plugin.take_http_calls();
    let call = calls.first().context("a dispatched call")?;
    assert_eq!((call.token, call.cluster.as_str()), (1, "cluster"));
    // The SDK routes the root's callback to the stream that sent the call, which then writes
    // to its paused request.
    plugin.respond_http_call(call.token, &[(":status", "204")], b"")?;
    assert!(has_log(plugin.logs(), LogLevel::Info, &format!(r#"stream {id} got response 1: Some("204")"#)));
    Ok(())
}

#[test]
fn randomness_is_deterministic() -> Result<()> {
    let random = || -> Result<String> {
        let mut plugin = start("")?;
        let mut stream = plugin.stream();
        stream.request_headers(&request("/random", &[]), true)?;
        Ok(header(&stream, "x-probe-random").unwrap_or_default().to_string())
    };
    let first = random()?;
    assert_eq!(first.len(), 16);
    assert_eq!(random()?, first);
    Ok(())
}

#[test]
fn fuel_is_metered_per_callback() -> Result<()> {
    let mut plugin = start("")?;
    let before = plugin.fuel_consumed_total();
    let mut stream = plugin.stream();
    stream.request_headers(&request("/headers", &[]), true)?;
    let last = stream.fuel_consumed_last();
    assert!(last > 0);
    stream.finish()?;
    assert!(plugin.fuel_consumed_total() >= before + last);
    Ok(())
}

#[test]
fn plugins_in_parallel_threads_do_not_share_state() -> Result<()> {
    let run = |name: &str, requests: u64| -> Result<(Plugin, Vec<String>)> {
        let mut plugin = start(&format!("name={name}"))?;
        let mut names = Vec::new();
        for _ in 0..requests {
            let mut stream = plugin.stream();
            stream.request_headers(&request("/shared", &[]), true)?;
            names.push(header(&stream, "x-probe-name").unwrap_or_default().to_string());
            // Shared data is per plugin: every plugin's first request finds the key unset.
            names.push(header(&stream, "x-probe-shared-before").unwrap_or_default().to_string());
            stream.finish()?;
        }
        Ok((plugin, names))
    };
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| run("alpha", 3));
        let b = scope.spawn(|| run("beta", 5));
        (a.join(), b.join())
    });
    let (a, a_names) = a.map_err(|_| anyhow!("thread alpha panicked"))??;
    let (b, b_names) = b.map_err(|_| anyhow!("thread beta panicked"))??;
    assert_eq!(a.counter("probe_requests"), Some(3));
    assert_eq!(b.counter("probe_requests"), Some(5));
    assert_eq!(a_names.get(..2), Some(&["alpha".to_string(), "none".to_string()][..]));
    assert_eq!(b_names.get(..2), Some(&["beta".to_string(), "none".to_string()][..]));
    assert!(a_names.iter().all(|name| name != "beta") && b_names.iter().all(|name| name != "alpha"));
    Ok(())
}

#[test]
fn modules_without_the_abi_version_export_are_rejected() {
    let empty_module = b"\0asm\x01\0\0\0";
    let error = Module::from_bytes(empty_module).err().map(|error| error.to_string());
    assert_eq!(error.as_deref(), Some("the module does not export `proxy_abi_version_0_2_1`"));
}
