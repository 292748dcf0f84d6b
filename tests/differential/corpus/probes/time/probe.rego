package probes.time

import rego.v1

# 2024-03-05T10:30:00Z
t := 1709634600000000000

parse_offset := time.parse_rfc3339_ns("2024-03-05T10:30:00+05:30")

parse_fraction := time.parse_rfc3339_ns("2024-03-05T10:30:00.123456789Z")

parse_lowercase_t_z := time.parse_rfc3339_ns("2024-03-05t10:30:00z")

parse_leap_second := time.parse_rfc3339_ns("2016-12-31T23:59:60Z")

parse_pre_epoch := time.parse_rfc3339_ns("1969-12-31T23:59:59Z")

duration_micro_sign := time.parse_duration_ns("1.5µs")

duration_days_unit := time.parse_duration_ns("1d")

date_kolkata := time.date([t, "Asia/Kolkata"])

clock_new_york := time.clock([t, "America/New_York"])

clock_unknown_zone := time.clock([t, "Mars/Olympus"])

add_month_overflow := time.add_date(1706659200000000000, 0, 1, 0)

add_year_from_leap_day := time.add_date(1709164800000000000, 1, 0, 0)

diff_years := time.diff(t, 1577836800000000000)

format_layout_zone := time.format([t, "Asia/Tokyo", "2006-01-02 15:04 MST"])
