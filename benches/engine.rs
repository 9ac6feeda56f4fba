//! Engine benchmarks (placeholder until the benchmark work lands).

fn main() {}
