package probes.net

import rego.v1

contains_v4_wider := net.cidr_contains("10.1.0.0/16", "10.0.0.0/8")

contains_ipv4_mapped := net.cidr_contains("10.0.0.0/8", "::ffff:10.0.0.1")

contains_mapped_range_v4 := net.cidr_contains("::ffff:0:0/96", "10.0.0.1")

contains_v6_zone := net.cidr_contains("fe80::/10", "fe80::1%eth0")

contains_host_bits_set := net.cidr_contains("10.1.2.3/8", "10.200.0.1")

contains_v4_all_with_v6 := net.cidr_contains("0.0.0.0/0", "::1")

contains_out_of_range_octet := net.cidr_contains("10.0.0.0/8", "10.0.0.256")

contains_leading_zero_octet := net.cidr_contains("10.0.0.0/8", "010.0.0.1")

contains_prefix_too_long := net.cidr_contains("10.0.0.0/33", "10.0.0.1")

is_valid_plain_ip := net.cidr_is_valid("192.168.0.1")

expand_30 := net.cidr_expand("192.168.0.0/30")

expand_host_bits := net.cidr_expand("192.168.0.5/30")

expand_v6_126 := net.cidr_expand("2001:db8::/126")
