package probes.numbers

import rego.v1

float_sum := 0.1 + 0.2

float_sum_equals := (0.1 + 0.2) == 0.3

max_safe_plus_one := 9007199254740992 + 1

big_int_equals_float := 9007199254740993 == 9007199254740992

float_division := 1 / 3

division_by_zero := 1 / 0

modulo_negative := -7 % 3

modulo_float := 7.5 % 2

modulo_by_zero := 7 % 0

round_half := round(2.5)

round_negative_half := round(-2.5)

floor_negative := floor(-1.5)

to_number_leading_space := to_number(" 3")

to_number_exponent := to_number("1e3")

to_number_hex := to_number("0x10")

to_number_null := to_number(null)

to_number_inf := to_number("Inf")

to_number_underscore := to_number("1_000")

to_number_big := to_number("123456789012345678901234567890")

to_number_leading_dot := to_number(".5")

range_float := numbers.range(1.5, 3)

overflow_float := 1e308 * 10

negative_zero_literal := -0.0

int_equals_float := 1 == 1.0

product_big := product([1e10, 1e10, 1e10])

bits_shift_64 := bits.lsh(1, 64)
