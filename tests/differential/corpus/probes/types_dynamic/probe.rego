package probes.types_dynamic

import rego.v1

type_of_v := type_name(input.v)

upper_of_v := upper(input.v)

plus_one := input.v + 1

count_of_v := count(input.v)

concat_v := concat(",", input.v)

to_number_of_v := to_number(input.v)

v_as_object_key := {input.v: true}

v_less_than_ten := input.v < 10

sprintf_v := sprintf("%v|%s|%d", [input.v, input.v, input.v])
