use regorus::Value;

use super::{BodyError, RequestBody, read};
use crate::config::IdentityConfig;
use crate::headers::HeaderList;
use crate::identity::StrippedHeaders;

fn headers(pairs: &[(&str, &str)]) -> StrippedHeaders {
    let config = IdentityConfig::parse(br#"{"trust_domains": ["ai.internal"]}"#).unwrap();
    StrippedHeaders::strip(HeaderList::from_pairs(pairs.iter().copied()), &config)
}

fn whole(body: &str) -> RequestBody {
    RequestBody { bytes: body.as_bytes().to_vec(), received: body.len(), truncated: false }
}

fn parsed(content_type: &str, body: &str) -> Result<Value, BodyError> {
    read(&headers(&[("content-type", content_type)]), &whole(body)).map(|input| input.parsed)
}

fn json(text: &str) -> Value {
    Value::from_json_str(text).unwrap()
}

#[test]
fn json_bodies_parse_by_content_type_and_other_types_are_null() {
    let chat = r#"{"model": "gpt-4o", "max_tokens": 256, "messages": [{"role": "user", "content": "hi"}]}"#;
    assert_eq!(parsed("application/json", chat).unwrap(), json(chat));
    assert_eq!(parsed("application/json; charset=utf-8", chat).unwrap(), json(chat));
    // Beyond the plugin's substring match: a `+json` type is JSON to the upstream too.
    assert_eq!(parsed("application/problem+JSON", "[1]").unwrap(), json("[1]"));
    assert_eq!(parsed("text/plain", chat).unwrap(), Value::Null);
    assert_eq!(parsed("application/grpc", chat).unwrap(), Value::Null);
    assert_eq!(parsed("application/json", "").unwrap(), Value::Null);
    let none = read(&headers(&[]), &whole(chat)).unwrap();
    assert_eq!((none.parsed, none.truncated, none.size, none.text), (Value::Null, false, 87, Some(Value::from(chat))));
}

#[test]
fn a_body_that_does_not_parse_as_its_type_is_an_error() {
    assert!(matches!(parsed("application/json", r#"{"model": "gpt-4o""#), Err(BodyError::Json(_))));
    assert!(matches!(parsed("application/json", "{} {}"), Err(BodyError::Json(_))), "trailing value");
    assert!(matches!(parsed("application/x-www-form-urlencoded", "a=%zz"), Err(BodyError::Form(_))));
    assert!(matches!(parsed("application/x-www-form-urlencoded", "a=1;b=2"), Err(BodyError::Form(_))));
    let latin1 = RequestBody { bytes: vec![b'{', 0xe9, b'}'], received: 3, truncated: false };
    assert_eq!(read(&headers(&[("content-type", "text/plain")]), &latin1).unwrap_err(), BodyError::NotUtf8);
    let bad_length = read(&headers(&[("content-type", "application/json"), ("content-length", "x")]), &whole("{}"));
    assert_eq!(bad_length.unwrap_err(), BodyError::ContentLength);
}

#[test]
fn a_truncated_body_is_not_parsed() {
    let cut = RequestBody { bytes: br#"{"model": "gp"#.to_vec(), received: 4096, truncated: true };
    let input = read(&headers(&[("content-type", "application/json")]), &cut).unwrap();
    assert_eq!((input.parsed, input.truncated, input.size), (Value::Null, true, 4096));
    // Shorter than its content-length: the plugin calls it truncated too.
    let short = headers(&[("content-type", "application/json"), ("content-length", "100")]);
    let input = read(&short, &whole("{}")).unwrap();
    assert_eq!((input.parsed, input.truncated), (Value::Null, true));
    let exact = headers(&[("content-type", "application/json"), ("content-length", "2")]);
    assert_eq!(read(&exact, &whole("{}")).unwrap().parsed, json("{}"));
}

#[test]
fn forms_map_every_key_to_its_values() {
    let form = parsed("application/x-www-form-urlencoded", "tool=read_file&path=%2Fdata%2Fa+b&tool=x&empty").unwrap();
    assert_eq!(form, json(r#"{"tool": ["read_file", "x"], "path": ["/data/a b"], "empty": [""]}"#));
}

#[test]
fn multipart_form_fields_in_order_with_json_parts_parsed() {
    let body = "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n\
                --XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n\
                {\"model\": \"gpt-4o\"}\r\n--XyZ\r\nContent-Disposition: attachment; name=\"ignored\"\r\n\r\nx\r\n\
                --XyZ\r\nContent-Disposition: form-data; name=\"purpose\"; filename=\"a.txt\"\r\n\r\nline\r\n--XyZ-not\r\n\
                --XyZ--\r\nepilogue";
    let value = parsed("multipart/form-data; boundary=XyZ", body).unwrap();
    assert_eq!(value, json(r#"{"purpose": ["fine-tune", "line\r\n--XyZ-not"], "meta": [{"model": "gpt-4o"}]}"#));
    // Bare line feeds, and a quoted boundary.
    let lf = "--a b\nContent-Disposition: form-data; name=k\n\nv\n--a b--\n";
    assert_eq!(parsed("multipart/form-data; boundary=\"a b\"", lf).unwrap(), json(r#"{"k": ["v"]}"#));
    assert_eq!(parsed("multipart/form-data", lf).unwrap(), Value::Null, "no boundary: not parsed");
    assert_eq!(parsed("multipart/form-data; boundary=q", "--q--\r\n").unwrap(), json("{}"));
    for (content_type, body) in [
        ("multipart/form-data; boundary=q", "no delimiter at all"),
        ("multipart/form-data; boundary=q", "--q\r\nContent-Disposition: form-data; name=k\r\n\r\nnever ends"),
        ("multipart/form-data; boundary=q", "--q\r\nnot a header\r\n\r\nv\r\n--q--"),
        ("multipart/form-data; boundary=q; boundary=r", "--q--\r\n"),
        ("multipart/form-data; boundary=", "--q--\r\n"),
        ("multipart/form-data; boundary=q", "--q\r\nContent-Type: application/json\r\nContent-Disposition: form-data; name=j\r\n\r\n{\r\n--q--"),
        ("multipart/form-data; boundary=q", "--q\r\nContent-Disposition: form-data; name=k\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=41\r\n--q--"),
    ] {
        assert!(parsed(content_type, body).is_err(), "{content_type} {body:?}");
    }
}
