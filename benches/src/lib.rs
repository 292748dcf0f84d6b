//! criterion benchmarks of svidgate; see benches/README.md.
