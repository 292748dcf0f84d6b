package probes.urlquery

import rego.v1

encode_reserved := urlquery.encode("a b&c=d/é~*")

decode_plus_and_percent := urlquery.decode("a+b%20c%2Bd%C3%A9")

decode_bad_escape := urlquery.decode("%zz")

encode_object_sorted := urlquery.encode_object({"b": "2", "a": ["x y", "z"], "c": {"s1", "s0"}})

decode_object_repeated := urlquery.decode_object("a=1&a=2&b=&c")

decode_object_semicolon := urlquery.decode_object("a=1;b=2")
