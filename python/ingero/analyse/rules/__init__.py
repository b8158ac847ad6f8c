"""The causal-chain rules, one module per family; each returns chains or nothing."""
