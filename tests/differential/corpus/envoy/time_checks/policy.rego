# Source pattern: OPA Envoy primer https://www.openpolicyagent.org/docs/envoy/primer
# (is_token_valid: now := time.now_ns() / 1000000000, nbf <= now, now < exp) and public
# business-hours policies (time.clock / time.weekday of a parsed RFC 3339 timestamp).
# Shape: time.now_ns compared with far-past / far-future bounds only (results do not depend
# on the day the test runs), time.parse_rfc3339_ns, time.clock, time.weekday, time.add_date.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

now_s := time.now_ns() / 1000000000

session_valid if {
	nbf := to_number(http_request.headers["x-session-nbf"])
	exp := to_number(http_request.headers["x-session-exp"])
	nbf <= now_s
	now_s < exp
}

# Business hours of the timestamp the caller stamped on the request (UTC).
request_ns := time.parse_rfc3339_ns(http_request.headers["x-request-time"])

business_hours if {
	[hour, _, _] := time.clock([request_ns, "UTC"])
	hour >= 9
	hour < 18
	not time.weekday(request_ns) in {"Saturday", "Sunday"}
}

# A grant stamped at issue time is good for 30 days.
grant_valid if {
	issued := time.parse_rfc3339_ns(http_request.headers["x-grant-issued"])
	expires := time.add_date(issued, 0, 0, 30)
	request_ns < expires
	issued <= request_ns
}

allow if {
	time.now_ns() > 0
	session_valid
	http_request.method == "GET"
}

allow if {
	http_request.method == "POST"
	business_hours
	grant_valid
}
