"""Running the core: the command line, launchers and workers, presets, sizing, scoring, benchmarks, doctor."""
