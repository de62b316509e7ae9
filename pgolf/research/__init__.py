"""Research on top of runs: the ablation engine, results tables, statistics, figures and notebooks."""
