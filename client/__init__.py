"""What the CLI, the demos, the benchmarks and the intake share to talk to the runbooks:
connect, start, find, query and render a run, and sign a decision."""
