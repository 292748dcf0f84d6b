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

# gobwas/glob semantics beyond the basics (svidgate's port of it, vendor/regorus PATCHES.md).

super_inside_pattern := glob.match("/api/**/v1", ["/"], "/api/x/y/v1")

# gobwas compiles this to "has prefix /api/ and suffix /v1", which overlap here: OPA says true.
super_prefix_suffix_overlap := glob.match("/api/**/v1", ["/"], "/api/v1")

super_multiple_delimiters := glob.match("**.js", [".", "/"], "a/b.c.js")

star_multiple_delimiters := glob.match("*.js", [".", "/"], "a/b.js")

nested_alternatives_wildcards := glob.match("{*.example.{com,org},localhost:{80,443}}", ["."], "api.example.org")

nested_alternatives_star_one_label := glob.match("{*.example.{com,org},localhost:{80,443}}", ["."], "a.b.example.org")

nested_alternatives_port := glob.match("{*.example.{com,org},localhost:{80,443}}", ["."], "localhost:443")

range_class := glob.match("file[0-9].txt", [], "file7.txt")

range_class_miss := glob.match("file[0-9].txt", [], "filex.txt")

negated_list_class := glob.match("[!abc]at", [], "cat")

negated_list_class_other := glob.match("[!abc]at", [], "hat")

negated_class_matches_delimiter := glob.match("a[!x]b", ["/"], "a/b")

escaped_bracket_in_class := glob.match("[\\]]", [], "]")

escaped_dash_in_class := glob.match("[a\\-z]", [], "-")

escaped_dash_not_a_range := glob.match("[a\\-z]", [], "b")

# gobwas takes one range per class: an error in OPA.
two_ranges_in_class := glob.match("[a-zA-Z]", [], "b")

empty_pattern_empty := glob.match("", [], "")

empty_pattern_nonempty := glob.match("", [], "a")

# An unclosed "{" is no error in gobwas: the alternatives run to the end of the pattern.
unclosed_alternatives := glob.match("{a,b", [], "b")

# gobwas glues "[!ab][!ab]" into "two characters, not containing the string ab".
glued_negated_classes := glob.match("[!ab][!ab]", [], "aa")

# ... and "??" into "two characters, not containing the delimiters as one string ./".
glued_singles_two_delimiters := glob.match("??", [".", "/"], "a.")

glued_singles_one_delimiter := glob.match("??", ["."], "a.")

# gobwas cuts "é" to its first byte where a text is followed by "?": no match in OPA.
multibyte_text_then_single := glob.match("é?", [], "éa")

# gobwas panics (slice bounds out of range) on this pattern and string, stopping OPA's evaluation.
empty_alternatives_panic := glob.match("a{,}", [], "a")
