package probes.glob

import rego.v1

star_default_delimiter_deep := glob.match("*.example.com", [], "a.b.example.com")

star_default_spans_slash := glob.match("/api/*", [], "/api/a/b")

star_slash_delimiter := glob.match("/api/*", ["/"], "/api/a/b")

star_null_delimiters := glob.match("/api/*", null, "/api/a.b/c")

question_mark_unicode := glob.match("?at", [], "éat")

question_mark_astral := glob.match("?at", [], "😀at")

negated_char_class := glob.match("[!a-c]at", [], "bat")

escaped_star := glob.match("a\\*b", [], "a*b")

multiple_delimiters := glob.match("*:*", [":", "/"], "a:b/c")

quote_meta := glob.quote_meta("*.{a,b}?[x]")

invalid_class := glob.match("[", [], "x")
