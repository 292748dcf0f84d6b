use super::*;

const GUARD: PathGuard = PathGuard { enabled: true, asterisk_form: false, authority_form: false };

#[test]
fn lets_normalized_origin_form_paths_through() {
    for path in ["/", "/v1/agent/plan", "/v1/agent/plan/", "/v1/gen%20erate?model=a", "/.well-known/jwks", "/a/.../b", "/a?x=../..//"] {
        assert_eq!(GUARD.check(path), Ok(()), "{path}");
    }
}

/// The paths of the hostile-traffic report: each one an app that normalizes serves as /v1/admin.
#[test]
fn refuses_paths_an_app_could_read_as_another() {
    let cases = [
        ("/v1/agent/../admin", PathError::DotSegment),
        ("/v1/agent/%2e%2e/admin", PathError::DotSegment),
        ("/v1/agent/%2E./admin", PathError::DotSegment),
        ("/v1/agent/./../admin", PathError::DotSegment),
        ("/v1/agent/..%2fadmin", PathError::AmbiguousSeparator),
        ("/v1/agent/..%2Fadmin", PathError::AmbiguousSeparator),
        ("//v1/agent/../../admin", PathError::EmptySegment),
        ("/v1//admin", PathError::EmptySegment),
        ("/v1/agent%5c..%5cadmin", PathError::AmbiguousSeparator),
        ("/v1/agent\\..\\admin", PathError::AmbiguousSeparator),
        ("/v1/admin%00.json", PathError::AmbiguousSeparator),
        ("/v1/%zz", PathError::InvalidEscape),
        ("/v1/%2", PathError::InvalidEscape),
        ("v1/agent", PathError::NotOriginForm),
        ("", PathError::NotOriginForm),
        ("*", PathError::NotOriginForm),
        ("model-server.ai.internal:443", PathError::NotOriginForm),
    ];
    for (path, expected) in cases {
        assert_eq!(GUARD.check(path), Err(expected), "{path}");
    }
}

#[test]
fn lets_other_forms_through_only_when_configured() {
    let asterisk = PathGuard { asterisk_form: true, ..GUARD };
    assert_eq!(asterisk.check("*"), Ok(()));
    assert_eq!(asterisk.check("host:443"), Err(PathError::NotOriginForm));
    let authority = PathGuard { authority_form: true, ..GUARD };
    assert_eq!(authority.check("model-server.ai.internal:443"), Ok(()));
    assert_eq!(authority.check(""), Ok(()), "CONNECT over HTTP/2 has no :path");
    assert_eq!(authority.check("*"), Err(PathError::NotOriginForm));
    let off = PathGuard { enabled: false, ..GUARD };
    assert_eq!(off.check("//v1/agent/../../admin"), Ok(()));
}

/// opa-envoy-plugin `envoyauth/request.go` getParsedPathAndQuery: `url.PathUnescape` of the whole
/// path, `strings.TrimLeft(path, "/")`, split on `/` (the `//admin/people` fix of February 2026).
#[test]
fn parses_paths_as_opa_envoy_does() {
    let cases: [(&str, &[&str]); 8] = [
        ("/v1/generate", &["v1", "generate"]),
        ("//admin/people", &["admin", "people"]),
        ("/a%2Fb", &["a", "b"]),
        ("/v1/gen%20erate?model=a", &["v1", "gen erate"]),
        ("/a+b", &["a+b"]),
        ("/", &[""]),
        ("/a/b/", &["a", "b", ""]),
        ("", &[""]),
    ];
    for (path, expected) in cases {
        assert_eq!(parsed_path(path), Ok(expected.iter().map(|s| (*s).to_owned()).collect()), "{path}");
    }
    assert_eq!(parsed_path("/a%zz"), Err(InputError::PathEscape));
}

/// Go's `url.ParseQuery`, as the plugin calls it.
#[test]
fn parses_queries_as_go_does() {
    let pairs = |list: &[(&str, &str)]| list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    assert_eq!(
        parsed_query("model=llama&model=mistral&q=a+b%21"),
        Ok(pairs(&[("model", "llama"), ("model", "mistral"), ("q", "a b!")]))
    );
    assert_eq!(parsed_query("a&b=&&=v"), Ok(pairs(&[("a", ""), ("b", ""), ("", "v")])));
    assert_eq!(parsed_query(""), Ok(Vec::new()));
    assert_eq!(parsed_query("a=1;b=2"), Err(InputError::QuerySemicolon));
    assert_eq!(parsed_query("a=%zz"), Err(InputError::QueryEscape));
    assert_eq!(parsed_query("%g=1"), Err(InputError::QueryEscape));
}

#[test]
fn checks_the_input_the_plugin_checks_on_every_request() {
    assert_eq!(check_input("/v1/generate?model=a"), Ok(()));
    assert_eq!(check_input("/v1/%zz"), Err(InputError::PathEscape));
    assert_eq!(check_input("/v1/generate?a=1;b=2"), Err(InputError::QuerySemicolon));
    assert_eq!(check_input("/v1/generate?a=%"), Err(InputError::QueryEscape));
}
