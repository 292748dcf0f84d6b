package probes.lang_conflicts

import rego.v1

complete_conflict := 1 if input.a

complete_conflict := 2 if input.b

read_conflict := complete_conflict

conflict_under_not if not complete_conflict

same_value_twice := "x" if input.a

same_value_twice := "x" if input.b

default defaulted_conflict := 0

defaulted_conflict := 1 if input.a

defaulted_conflict := 2 if input.b

partial_object["k"] := 1 if input.a

partial_object["k"] := 2 if input.b

partial_object["other"] := 3

partial_object_other_key := partial_object.other

fn(x) := "first" if x > 0

fn(x) := "second" if x > 1

fn_call_small := fn(1)

fn_call_conflict := fn(2)

object_comprehension_conflict := {k: v | some v in [1, 2]; k := "same"}
