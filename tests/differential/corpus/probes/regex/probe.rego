package probes.regex

import rego.v1

digit_arabic_indic := regex.match(`^\d+$`, "٣٤٥")

word_unicode := regex.match(`^\w+$`, "café")

space_nbsp := regex.match(`\s`, "\u00a0")

case_insensitive_sharp_s := regex.match(`(?i)^straße$`, "STRASSE")

case_insensitive_kelvin := regex.match(`(?i)^k$`, "K")

letter_class_cjk := regex.match(`^\p{L}+$`, "日本語")

word_boundary_unicode := regex.match(`\bcafé\b`, "un café noir")

multiline_flag := regex.match(`(?m)^b$`, "a\nb")

posix_class := regex.match(`^[[:alpha:]]+$`, "abcé")

invalid_pattern := regex.match(`(`, "x")

lookahead := regex.match(`a(?=b)`, "ab")

backreference := regex.match(`(a)\1`, "aa")

is_valid_lookahead := regex.is_valid(`a(?=b)`)

is_valid_backreference := regex.is_valid(`(a)\1`)

is_valid_large_repeat := regex.is_valid(`a{1001}`)

find_n_unicode_digits := regex.find_n(`\d+`, "x٣٤y12", -1)

find_n_empty_matches := regex.find_n(`a*`, "baaac", -1)

split_empty_matches := regex.split(`x*`, "abc")

replace_groups := regex.replace("2024-03-05", `(\d+)-(\d+)-(\d+)`, "$3/$2/$1")

replace_ambiguous_group := regex.replace("abc", `(b)`, "$1x")

replace_unicode := regex.replace("naïve café", `[^\x00-\x7f]`, "?")

is_valid_nested_repeat_product := regex.is_valid(`(a{100}){100}`)

is_valid_nested_repeat_within := regex.is_valid(`(a{10}){100}`)

is_valid_repeat_at_limit := regex.is_valid(`a{1000}`)

match_nested_repeat_product := regex.match(`^(?:a{2}){600}$`, "aaaa")

split_leading_separator := regex.split(`,`, ",a,,b,")
