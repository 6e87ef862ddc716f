"""Reproducible measurements: each benchmark runs ours and a plain baseline side by side in
one run, on the same broker, data and model, and writes JSON + a Markdown table (+ PNG)."""
