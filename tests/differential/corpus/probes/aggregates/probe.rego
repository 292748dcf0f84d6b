package probes.aggregates

import rego.v1

sum_mixed_int_float := sum([1, 2.5, -0.5])

max_mixed_types := max([1, "a", null, true, [0]])

max_empty := max([])

min_set_strings := min({"b", "a", "B"})

max_int_float_tie := max([1, 1.0])

sort_mixed_types := sort([3, "b", null, false, [1], {"a": 1}, 1.5, "a", true])

sort_int_float := sort([2.0, 1, 1.0, 0.5])

slice_past_end := array.slice([1, 2, 3], 1, 10)

slice_negative_start := array.slice([1, 2, 3], -1, 2)

slice_reversed_bounds := array.slice([1, 2, 3], 2, 1)

set_intersection_operator := {1, 2} & {2, 3}

set_difference_operator := {1, 2, 3} - {2}

union_builtin := union({{1}, {2, 3}, set()})

intersection_of_empty := intersection(set())

set_int_float_dedup := count({1, 1.0, 2})
