package probes.lang_with_mocking

import rego.v1

mock_upper(_) := "MOCK"

upper_mocked_by_function := v if {
	v := upper("a") with upper as mock_upper
}

upper_mocked_by_value := v if {
	v := upper("a") with upper as "VALUE"
}

count_mocked := v if {
	v := count([1, 2]) with count as 99
}
