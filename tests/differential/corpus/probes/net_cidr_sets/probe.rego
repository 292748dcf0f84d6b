package probes.net_cidr_sets

import rego.v1

intersects_v4 := net.cidr_intersects("192.168.0.0/16", "192.168.1.0/24")

intersects_mixed_family := net.cidr_intersects("0.0.0.0/0", "::/0")

contains_matches_array := net.cidr_contains_matches(["10.0.0.0/8", "192.168.0.0/16"], ["10.1.1.1", "192.168.3.4", "8.8.8.8"])

merge_adjacent := net.cidr_merge(["192.168.0.0/25", "192.168.0.128/25"])

merge_ips_and_cidrs := net.cidr_merge({"10.0.0.1", "10.0.0.0/30", "10.0.0.4/30"})
